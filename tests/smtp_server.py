"""An SMTP server on loopback for the email tests (aiosmtpd, Debian's python3-aiosmtpd).

Usage: python3 smtp_server.py PORT OUT_DIR REFUSE [DELAY_MS]

Every accepted message is written to OUT_DIR as <n>.eml, its envelope recipients to
<n>.rcpt (one per line). The first REFUSE messages are answered with a 451 instead. With
DELAY_MS, each message is answered that long after its data arrived (a slow server). With
the environment variable REJECT_RCPT set, a recipient containing it is refused for good (550).
"""

import asyncio
import os
import sys

from aiosmtpd.controller import Controller


class Recorder:
    def __init__(self, out, refuse, delay):
        self.out = out
        self.refuse = refuse
        self.delay = delay
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reject = os.environ.get("REJECT_RCPT")
        if reject and reject in address:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay / 1000)
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
    delay = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    controller = Controller(Recorder(out, refuse, delay), hostname="127.0.0.1", port=port)
    controller.start()
    print("ready", flush=True)
    try:
        # Serve until the test kills us or closes our stdin.
        sys.stdin.read()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
