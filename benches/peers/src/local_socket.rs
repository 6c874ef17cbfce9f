//! interprocess's local socket (a Unix stream socket under a path in the temp directory);
//! every message is 64 bytes, so it is framed by its fixed size with `read_exact`.

use std::io::{Read, Write};
use std::path::PathBuf;

use interprocess::local_socket::{prelude::*, GenericFilePath, ListenerOptions, Stream};

use crate::harness::{
    rtt_client, serve_echo, serve_stream, tput_receiver, Config, Phase, Prepared, Res, ServerCtx,
    MSG,
};

pub fn prepare(phase: Phase, cfg: &Config, tag: &str) -> Res<Prepared> {
    let cfg = cfg.clone();
    let path = std::env::temp_dir().join(format!("ipckit-peers-{tag}.sock"));
    let _ = std::fs::remove_file(&path);
    let listener = ListenerOptions::new()
        .name(path.as_path().to_fs_name::<GenericFilePath>()?)
        .create_sync()?;
    let arg = path
        .to_str()
        .ok_or("the temp directory is not UTF-8")?
        .to_string();
    let client = move || {
        // Blocks until the server connects; the supervisor kills the server on timeout.
        let mut stream = listener.accept()?;
        // A dead server shows as end of file; the timeout covers a stuck one.
        stream.set_recv_timeout(Some(cfg.timeout))?;
        stream.set_send_timeout(Some(cfg.timeout))?;
        match phase {
            Phase::Rtt => rtt_client(&cfg, |msg, reply| {
                stream.write_all(msg)?;
                reply.resize(MSG, 0);
                stream.read_exact(reply)?;
                Ok(())
            }),
            Phase::Tput => tput_receiver(&cfg, |buf| {
                buf.resize(MSG, 0);
                stream.read_exact(buf)?;
                Ok(())
            }),
        }
    };
    Ok(Prepared::new(vec![arg], client, move || {
        let _ = std::fs::remove_file(&path);
    }))
}

pub fn serve(ctx: ServerCtx, args: &[String]) -> Res<()> {
    let [path] = args else {
        return Err("expected the socket path".into());
    };
    let path = PathBuf::from(path);
    let mut stream = Stream::connect(path.as_path().to_fs_name::<GenericFilePath>()?)?;
    stream.set_recv_timeout(Some(ctx.timeout))?;
    stream.set_send_timeout(Some(ctx.timeout))?;
    match ctx.phase {
        Phase::Rtt => serve_echo(ctx, |buf| {
            buf.resize(MSG, 0);
            stream.read_exact(buf)?;
            stream.write_all(buf)?;
            Ok(())
        }),
        Phase::Tput => serve_stream(ctx, |msg| {
            stream.write_all(msg)?;
            Ok(())
        }),
    }
}
