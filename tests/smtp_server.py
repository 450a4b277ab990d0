"""An SMTP server on loopback for the email tests (aiosmtpd, Debian's python3-aiosmtpd).

Usage: python3 smtp_server.py PORT OUT_DIR REFUSE

Every accepted message is written to OUT_DIR as <n>.eml, its envelope recipients to
<n>.rcpt (one per line). The first REFUSE messages are answered with a 451 instead.
"""

import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, out, refuse):
        self.out = out
        self.refuse = refuse
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        if self.refuse > 0:
            self.refuse -= 1
            return "451 4.3.0 try again later"
        self.count += 1
        base = os.path.join(self.out, str(self.count))
        with open(base + ".tmp", "wb") as f:
            f.write(envelope.original_content)
        with open(base + ".rcpt", "w") as f:
            f.write("\n".join(envelope.rcpt_tos) + "\n")
        os.rename(base + ".tmp", base + ".eml")
        return "250 OK"


def main():
    port, out, refuse = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    controller = Controller(Recorder(out, refuse), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        # Serve until the test kills us or closes our stdin.
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
