//! Work items run on a few threads and handed back in the order they were taken.
//!
//! Ingest decodes a file's batches of lines, and brings the dirty dates of the ledger up to
//! date, this way: the items come from the calling thread (which reads the file, or the store),
//! `threads` workers do the work that needs neither, and the calling thread takes the results
//! in order (claiming lines, or writing rows), so the outcome is the same for any number of
//! threads. With one thread there is no worker: each item is worked where it is taken.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::{mpsc, Mutex};

/// Takes items from `next` until it returns `None`, works each with `work` on `threads` threads
/// (each with its own state from `init`, made on that thread), and hands the results to
/// `consume` in the order the items were taken. At most `in_flight` items are taken and not
/// yet consumed. An error of `next` or of `consume` stops the rest; the workers end before
/// this returns. A panic in `work` is an error too, not a hang (`work` catches its own panics
/// where it can say more about them).
pub fn in_order<I, O, S>(
    threads: usize,
    in_flight: usize,
    mut next: impl FnMut() -> anyhow::Result<Option<I>>,
    init: impl Fn() -> S + Sync,
    work: impl Fn(&mut S, I) -> O + Sync,
    mut consume: impl FnMut(O) -> anyhow::Result<()>,
) -> anyhow::Result<()>
where
    I: Send,
    O: Send,
{
    let guarded = |state: &mut S, item: I| {
        std::panic::catch_unwind(AssertUnwindSafe(|| work(state, item))).ok()
    };
    if threads <= 1 {
        let mut state = init();
        while let Some(item) = next()? {
            consume(guarded(&mut state, item).ok_or_else(panicked)?)?;
        }
        return Ok(());
    }
    let (to_workers, items) = mpsc::sync_channel::<(u64, I)>(threads);
    let items = Mutex::new(items);
    let (to_caller, results) = mpsc::channel::<(u64, Option<O>)>();
    std::thread::scope(|scope| {
        for i in 0..threads {
            let (items, to_caller, init, guarded) = (&items, to_caller.clone(), &init, &guarded);
            std::thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn_scoped(scope, move || {
                    let mut state = init();
                    loop {
                        let taken = items.lock().map(|q| q.recv());
                        let Ok(Ok((seq, item))) = taken else { break };
                        let out = guarded(&mut state, item);
                        if out.is_none() {
                            // What the panic left half changed is not used again.
                            state = init();
                        }
                        if to_caller.send((seq, out)).is_err() {
                            break;
                        }
                    }
                })
                .expect("a thread can be started");
        }
        drop(to_caller);
        let mut ahead: BTreeMap<u64, Option<O>> = BTreeMap::new();
        let (mut taken, mut done, mut all_taken) = (0u64, 0u64, false);
        let in_flight = in_flight.max(1) as u64;
        let result = (|| -> anyhow::Result<()> {
            loop {
                while !all_taken && taken - done < in_flight {
                    match next()? {
                        Some(item) => {
                            to_workers
                                .send((taken, item))
                                .map_err(|_| anyhow::anyhow!("the worker threads stopped"))?;
                            taken += 1;
                        }
                        None => all_taken = true,
                    }
                }
                if done == taken {
                    return Ok(());
                }
                let out = match ahead.remove(&done) {
                    Some(out) => out,
                    None => loop {
                        match results.recv() {
                            Ok((seq, out)) if seq == done => break out,
                            Ok((seq, out)) => {
                                ahead.insert(seq, out);
                            }
                            Err(_) => anyhow::bail!("the worker threads stopped"),
                        }
                    },
                };
                consume(out.ok_or_else(panicked)?)?;
                done += 1;
            }
        })();
        // Closing the queue ends the workers; the scope waits for them.
        drop(to_workers);
        result
    })
}

fn panicked() -> anyhow::Error {
    anyhow::anyhow!("a worker thread panicked")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Items worked out of order (later ones finish first) still come back in order, for any
    /// number of threads.
    #[test]
    fn results_come_back_in_the_order_taken() {
        for threads in [1, 2, 3, 8] {
            let mut items = 0..200u64;
            let mut seen = Vec::new();
            in_order(
                threads,
                2 * threads,
                || Ok(items.next()),
                || (),
                |_, i| {
                    std::thread::sleep(std::time::Duration::from_micros((200 - i) % 7 * 50));
                    i * 10
                },
                |o| {
                    seen.push(o);
                    Ok(())
                },
            )
            .unwrap();
            assert_eq!(
                seen,
                (0..200).map(|i| i * 10).collect::<Vec<_>>(),
                "{threads}"
            );
        }
    }

    /// Each worker's state is its own, made on its own thread.
    #[test]
    fn every_worker_has_its_own_state() {
        let made = AtomicUsize::new(0);
        let mut items = 0..50u32;
        let mut total = 0;
        in_order(
            3,
            6,
            || Ok(items.next()),
            || {
                made.fetch_add(1, Ordering::SeqCst);
                0u32
            },
            |count, i| {
                *count += 1;
                i
            },
            |i| {
                total += i;
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(made.load(Ordering::SeqCst), 3);
        assert_eq!(total, (0..50).sum::<u32>());
    }

    /// An error of `consume` stops taking items, and returns once the workers ended.
    #[test]
    fn an_error_of_consume_stops_taking_items() {
        let taken = AtomicUsize::new(0);
        let mut items = 0..1000u32;
        let err = in_order(
            2,
            4,
            || {
                taken.fetch_add(1, Ordering::SeqCst);
                Ok(items.next())
            },
            || (),
            |_, i| i,
            |i| {
                if i == 10 {
                    anyhow::bail!("stop at 10")
                }
                Ok(())
            },
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "stop at 10");
        assert!(
            taken.load(Ordering::SeqCst) <= 10 + 1 + 4,
            "taken ahead at most in_flight"
        );
    }

    /// A worker that panics ends the run with an error rather than a hang, after the results
    /// before it were consumed.
    #[test]
    fn a_panicking_worker_is_an_error_not_a_hang() {
        for threads in [1, 2, 4] {
            let mut items = 0..100u32;
            let mut consumed = Vec::new();
            let err = in_order(
                threads,
                2 * threads,
                || Ok(items.next()),
                || (),
                |_, i| {
                    if i == 5 {
                        panic!("worker panics at 5");
                    }
                    i
                },
                |i| {
                    consumed.push(i);
                    Ok(())
                },
            )
            .unwrap_err();
            assert_eq!(err.to_string(), "a worker thread panicked");
            assert_eq!(consumed, [0, 1, 2, 3, 4], "{threads}");
        }
    }
}
