//! ipc-channel's bytes channels (raw bytes, no serialisation), bootstrapped through a
//! one-shot server whose name the server process gets on its command line.

use ipc_channel::ipc::{self, IpcBytesReceiver, IpcBytesSender, IpcOneShotServer, IpcSender};

use crate::harness::{
    rtt_client, serve_echo, serve_stream, tput_receiver, Config, Phase, Prepared, Res, ServerCtx,
};

/// What the server sends back on connecting: a sender towards itself and a receiver
/// for what it will send to the client.
type Hello = (IpcBytesSender, IpcBytesReceiver);

pub fn prepare(phase: Phase, cfg: &Config, _tag: &str) -> Res<Prepared> {
    let cfg = cfg.clone();
    let (server, name) = IpcOneShotServer::<Hello>::new()?;
    let client = move || {
        // Blocks until the server connects; the supervisor kills the server on timeout.
        let (_bootstrap, (tx, rx)) = server.accept()?;
        match phase {
            Phase::Rtt => rtt_client(&cfg, |msg, reply| {
                tx.send(msg)?;
                *reply = rx.recv()?;
                Ok(())
            }),
            Phase::Tput => tput_receiver(&cfg, |buf| {
                *buf = rx.recv()?;
                Ok(())
            }),
        }
    };
    Ok(Prepared::new(vec![name], client, || {}))
}

pub fn serve(ctx: ServerCtx, args: &[String]) -> Res<()> {
    let [name] = args else {
        return Err("expected the one-shot server's name".into());
    };
    let bootstrap = IpcSender::<Hello>::connect(name.clone())?;
    let (to_server, from_client) = ipc::bytes_channel()?;
    let (to_client, from_server) = ipc::bytes_channel()?;
    bootstrap.send((to_server, from_server))?;
    match ctx.phase {
        Phase::Rtt => serve_echo(ctx, |buf| {
            *buf = from_client.recv()?;
            to_client.send(buf)?;
            Ok(())
        }),
        Phase::Tput => serve_stream(ctx, |msg| {
            to_client.send(msg)?;
            Ok(())
        }),
    }
}
