//! iceoryx2's publish-subscribe (feature `iceoryx2`): two services for the round trip, one
//! with a 1024-sample buffer and back-pressure for the stream. Its subscriber has no
//! blocking receive (that takes an extra event service and a wait set), so it busy-polls
//! and is to be read next to ipckit's busy-polling row.

use std::time::Instant;

use iceoryx2::port::subscriber::Subscriber;
use iceoryx2::prelude::*;

use crate::harness::{
    rtt_client, serve_echo, serve_stream, tput_receiver, Config, Phase, Prepared, Res, ServerCtx,
    MSG,
};

type Payload = [u8; MSG];
const TPUT_BUFFER: usize = 1024;

/// Waits for a sample, spinning, until `deadline` (a dead publisher is never reported).
fn recv_spin(
    sub: &Subscriber<ipc::Service, Payload, ()>,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Res<()> {
    let mut spins = 0u32;
    loop {
        if let Some(sample) = sub.receive()? {
            buf.clear();
            buf.extend_from_slice(&*sample);
            return Ok(());
        }
        spins = spins.wrapping_add(1);
        if spins & 1023 == 0 && Instant::now() > deadline {
            return Err("timed out waiting for a sample".into());
        }
        std::hint::spin_loop();
    }
}

/// Keeps the warning that no config file was found out of the table.
fn quiet() {
    set_log_level(LogLevel::Error);
}

fn service_name(name: &str) -> Res<ServiceName> {
    Ok(ServiceName::new(name)?)
}

pub fn prepare(phase: Phase, cfg: &Config, tag: &str) -> Res<Prepared> {
    let cfg = cfg.clone();
    quiet();
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    match phase {
        Phase::Rtt => {
            let (ping, pong) = (format!("peers/{tag}/ping"), format!("peers/{tag}/pong"));
            let ping_service = node
                .service_builder(&service_name(&ping)?)
                .publish_subscribe::<Payload>()
                .create()?;
            let pong_service = node
                .service_builder(&service_name(&pong)?)
                .publish_subscribe::<Payload>()
                .create()?;
            let tx = ping_service.publisher_builder().create()?;
            let rx = pong_service.subscriber_builder().create()?;
            let client = move || {
                let _keep = (node, ping_service, pong_service);
                let deadline = Instant::now() + cfg.timeout;
                // A sample sent before the server's subscriber exists is lost: wait for
                // the server to say it is there.
                let mut hello = Vec::new();
                recv_spin(&rx, &mut hello, deadline)?;
                rtt_client(&cfg, |msg, reply| {
                    tx.send_copy(*msg)?;
                    recv_spin(&rx, reply, deadline)
                })
            };
            Ok(Prepared::new(vec![ping, pong], client, || {}))
        }
        Phase::Tput => {
            let (name, go) = (format!("peers/{tag}"), format!("peers/{tag}/go"));
            let service = node
                .service_builder(&service_name(&name)?)
                .publish_subscribe::<Payload>()
                .subscriber_max_buffer_size(TPUT_BUFFER)
                .enable_safe_overflow(false)
                .create()?;
            let rx = service
                .subscriber_builder()
                .buffer_size(TPUT_BUFFER)
                .create()?;
            let go_service = node
                .service_builder(&service_name(&go)?)
                .publish_subscribe::<Payload>()
                .create()?;
            let go_tx = go_service.publisher_builder().create()?;
            let client = move || {
                let _keep = (node, service, go_service);
                let deadline = Instant::now() + cfg.timeout;
                // A subscriber connects to a publisher only when it next receives, and a
                // publisher discards (back-pressure or not) for one not yet connected:
                // receive a hello first, then let the server start.
                let mut hello = Vec::new();
                recv_spin(&rx, &mut hello, deadline)?;
                go_tx.send_copy([0; MSG])?;
                tput_receiver(&cfg, |buf| recv_spin(&rx, buf, deadline))
            };
            Ok(Prepared::new(vec![name, go], client, || {}))
        }
    }
}

pub fn serve(ctx: ServerCtx, args: &[String]) -> Res<()> {
    quiet();
    let node = NodeBuilder::new().create::<ipc::Service>()?;
    match ctx.phase {
        Phase::Rtt => {
            let [ping, pong] = args else {
                return Err("expected the ping and pong service names".into());
            };
            let rx = node
                .service_builder(&service_name(ping)?)
                .publish_subscribe::<Payload>()
                .open()?
                .subscriber_builder()
                .create()?;
            let tx = node
                .service_builder(&service_name(pong)?)
                .publish_subscribe::<Payload>()
                .open()?
                .publisher_builder()
                .create()?;
            tx.send_copy([0; MSG])?;
            serve_echo(ctx, |buf| {
                recv_spin(&rx, buf, ctx.deadline)?;
                tx.send_copy(buf.as_slice().try_into()?)?;
                Ok(())
            })
        }
        Phase::Tput => {
            let [name, go] = args else {
                return Err("expected the data and go service names".into());
            };
            let go_rx = node
                .service_builder(&service_name(go)?)
                .publish_subscribe::<Payload>()
                .open()?
                .subscriber_builder()
                .create()?;
            let tx = node
                .service_builder(&service_name(name)?)
                .publish_subscribe::<Payload>()
                .open()?
                .publisher_builder()
                .backpressure_strategy(BackpressureStrategy::RetryUntilDelivered)
                .create()?;
            tx.send_copy([0; MSG])?;
            recv_spin(&go_rx, &mut Vec::new(), ctx.deadline)?;
            serve_stream(ctx, |msg| {
                tx.send_copy(*msg)?;
                Ok(())
            })
        }
    }
}
