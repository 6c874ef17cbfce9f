//! The `mailbox-async` and `mailbox-waitset` rows: the `mailbox` row's link (single sender
//! and receiver, sleeping waits), received through a tokio current-thread runtime blocked
//! on `recv_async`, or through a one-member `WaitSet`. Both ends of the link wait the same
//! way, so a round trip pays the measured wake-up path twice, as the `mailbox` row does.

use ipckit::shm::{MailboxReceiver, MailboxSender};
use ipckit::waitset::WaitSet;
use ipckit::{Deadline, MessageReceiver, MessageSender, Metadata};

/// How a waiting row receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `recv_async` on a tokio current-thread runtime.
    Async,
    /// `try_recv`, then `WaitSet::wait`.
    WaitSet,
}

/// A mailbox link whose receives wait through [`Via`].
pub struct WaitingLink {
    tx: MailboxSender,
    rx: MailboxReceiver,
    waiter: Waiter,
}

enum Waiter {
    #[cfg(feature = "tokio")]
    Async(tokio::runtime::Runtime),
    WaitSet(WaitSet),
}

impl WaitingLink {
    /// The link; `Err` for `Via::Async` in a build without the `tokio` feature.
    pub fn new(tx: MailboxSender, rx: MailboxReceiver, via: Via) -> anyhow::Result<WaitingLink> {
        let waiter = match via {
            #[cfg(feature = "tokio")]
            Via::Async => Waiter::Async(
                tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build()?,
            ),
            #[cfg(not(feature = "tokio"))]
            Via::Async => anyhow::bail!("this ipckit was built without the `tokio` feature"),
            Via::WaitSet => {
                let mut set = WaitSet::new();
                set.add(&rx)?;
                Waiter::WaitSet(set)
            }
        };
        Ok(WaitingLink { tx, rx, waiter })
    }
}

impl MessageSender for WaitingLink {
    fn send_deadline(&mut self, msg: &[u8], deadline: Deadline) -> ipckit::Result<()> {
        self.tx.send_deadline(msg, deadline)
    }
    fn max_message_size(&self) -> usize {
        self.tx.max_message_size()
    }
}

impl MessageReceiver for WaitingLink {
    fn recv_deadline(&mut self, buf: &mut Vec<u8>, deadline: Deadline) -> ipckit::Result<Metadata> {
        match &mut self.waiter {
            #[cfg(feature = "tokio")]
            Waiter::Async(rt) => {
                let rx = &mut self.rx;
                let msg = rt.block_on(async {
                    match deadline.remaining() {
                        None => rx.recv_async().await,
                        Some(left) => tokio::time::timeout(left, rx.recv_async())
                            .await
                            .unwrap_or(Err(deadline.recv_expired())),
                    }
                })?;
                *buf = msg.data;
                Ok(msg.meta)
            }
            Waiter::WaitSet(set) => loop {
                match self.rx.recv_deadline(buf, Deadline::Now) {
                    Err(ipckit::Error::Empty) => {
                        set.wait(deadline)?;
                    }
                    other => return other,
                }
            },
        }
    }
}
