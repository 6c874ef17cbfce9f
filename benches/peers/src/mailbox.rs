//! ipckit's shared-memory mailbox: two single-sender, single-receiver mailboxes for the
//! round trip, one larger one for the stream.

use ipckit::link::Deadline;
use ipckit::shm::mailbox::{Mailbox, WaitStrategy};
use ipckit::{MessageReceiver, MessageSender};

use crate::harness::{
    rtt_client, serve_echo, serve_stream, tput_receiver, Config, Phase, Prepared, Res, ServerCtx,
    MSG,
};

/// Slots in each round-trip mailbox (only one message is ever in flight).
const RTT_CAPACITY: usize = 16;
/// Slots in the streaming mailbox: room for the sender to run ahead.
const TPUT_CAPACITY: usize = 1024;

fn create(name: &str, capacity: usize, wait: WaitStrategy) -> ipckit::Result<Mailbox> {
    Mailbox::builder(name)
        .capacity(capacity)
        .max_message_size(MSG)
        .single_sender()
        .single_receiver()
        .wait_strategy(wait)
        .create()
}

fn open(name: &str, wait: WaitStrategy) -> ipckit::Result<Mailbox> {
    Mailbox::builder(name).wait_strategy(wait).open()
}

fn remove_all(names: Vec<String>) -> impl FnOnce() + Send {
    move || {
        for name in names {
            let _ = Mailbox::remove(&name);
        }
    }
}

pub fn prepare(wait: WaitStrategy, phase: Phase, cfg: &Config, tag: &str) -> Res<Prepared> {
    let cfg = cfg.clone();
    match phase {
        Phase::Rtt => {
            let (ping, pong) = (format!("peers-{tag}-ping"), format!("peers-{tag}-pong"));
            let ping_box = create(&ping, RTT_CAPACITY, wait)?;
            let pong_box = create(&pong, RTT_CAPACITY, wait).inspect_err(|_| {
                let _ = Mailbox::remove(&ping);
            })?;
            let cleanup = remove_all(vec![ping.clone(), pong.clone()]);
            let client = move || {
                let mut tx = ping_box.sender()?;
                let mut rx = pong_box.receiver()?;
                // The mailbox has no notion of a dead peer: the deadline bounds every wait.
                let deadline = Deadline::after(cfg.timeout);
                rtt_client(&cfg, |msg, reply| {
                    tx.send_deadline(msg, deadline)?;
                    rx.recv_deadline(reply, deadline)?;
                    Ok(())
                })
            };
            Ok(Prepared::new(vec![ping, pong], client, cleanup))
        }
        Phase::Tput => {
            let name = format!("peers-{tag}");
            let mailbox = create(&name, TPUT_CAPACITY, wait)?;
            let cleanup = remove_all(vec![name.clone()]);
            let client = move || {
                let mut rx = mailbox.receiver()?;
                let deadline = Deadline::after(cfg.timeout);
                tput_receiver(&cfg, |buf| {
                    rx.recv_deadline(buf, deadline)?;
                    Ok(())
                })
            };
            Ok(Prepared::new(vec![name], client, cleanup))
        }
    }
}

pub fn serve(wait: WaitStrategy, ctx: ServerCtx, args: &[String]) -> Res<()> {
    let deadline = Deadline::At(ctx.deadline);
    match ctx.phase {
        Phase::Rtt => {
            let [ping, pong] = args else {
                return Err("expected the ping and pong mailbox names".into());
            };
            let mut rx = open(ping, wait)?.receiver()?;
            let mut tx = open(pong, wait)?.sender()?;
            serve_echo(ctx, |buf| {
                rx.recv_deadline(buf, deadline)?;
                tx.send_deadline(buf, deadline)?;
                Ok(())
            })
        }
        Phase::Tput => {
            let [name] = args else {
                return Err("expected the mailbox name".into());
            };
            let mut tx = open(name, wait)?.sender()?;
            serve_stream(ctx, |msg| {
                tx.send_deadline(msg, deadline)?;
                Ok(())
            })
        }
    }
}
