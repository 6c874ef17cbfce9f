//! A TCP client and server, on the loopback interface.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, section "4. Sockets" (a bidirectional
//! endpoint, like a telephone; a stream socket (TCP) gives reliable, ordered delivery, like a
//! phone call; used by web clients and servers), with `003_aa59fdfdb716713a.txt`, "Sockets"
//! (processes open sockets and connect them; what one writes the other reads; the OS moves the
//! data through the socket buffers) and `002_aa004447b60a7019.txt`, "Common IPC Mechanisms".
//!
//! `cargo run --example tcp_client_server`: the server (this program again, `server`) listens on
//! `127.0.0.1` at a port the kernel picks and tells its parent which. TCP is a byte stream, so
//! the server speaks lines (`tcp::Listener::accept_bytes`): each line it reads, it answers with
//! `echo: LINE`. Two clients talk to it in turn:
//!
//! 1. this process, with `tcp::connect_bytes`, sends two requests and reads each reply on the
//!    same connection;
//! 2. a plain tool that knows nothing of ipckit, bash's `/dev/tcp`:
//!    `bash -c 'exec 3<>/dev/tcp/127.0.0.1/PORT; echo "from bash" >&3; head -n 1 <&3; echo bye >&3'`
//!    and its `bye` ends the server.
//!
//! Loopback only: nothing leaves the machine.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use ipckit::socket::tcp;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const WAIT: Duration = Duration::from_secs(20);

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("server") {
        return server();
    }
    let mut server = Command::new(std::env::current_exe()?)
        .arg("server")
        .stdout(Stdio::piped())
        .spawn()?;
    let outcome = clients(&mut server);
    if outcome.is_err() {
        let _ = server.kill();
    }
    let status = server.wait()?;
    outcome?;
    if !status.success() {
        return Err(format!("the server failed: {status}").into());
    }
    Ok(())
}

fn clients(server: &mut std::process::Child) -> Result<()> {
    // The server's first line is its address; the rest of its output follows ours.
    let mut lines = BufReader::new(server.stdout.take().ok_or("piped")?).lines();
    let addr = lines.next().ok_or("the server exited before listening")??;
    let mut connection = tcp::connect_bytes(addr.as_str())?;
    connection.set_read_timeout(Some(WAIT));
    println!("client: connected to {addr}");
    // Lines are read through one shared reference while requests are written through another.
    let mut replies = BufReader::new(&connection).lines();
    let mut requests = &connection;
    for request in ["hello", "how are you?"] {
        writeln!(requests, "{request}")?;
        let reply = replies.next().ok_or("the server hung up")??;
        println!("client: sent {request:?}, the server replied {reply:?}");
        if reply != format!("echo: {request}") {
            return Err("a reply does not match its request".into());
        }
    }
    drop(replies);
    // Closing the connection ends the server's first conversation.
    drop(connection);

    let port = addr.rsplit(':').next().ok_or("no port")?;
    let script =
        r#"exec 3<>"/dev/tcp/127.0.0.1/$0"; echo "from bash" >&3; head -n 1 <&3; echo bye >&3"#;
    println!("$ bash -c '{}'", script.replace("$0", port));
    let out = Command::new("bash").args(["-c", script, port]).output()?;
    let reply = String::from_utf8(out.stdout)?;
    println!("bash /dev/tcp: the server replied {:?}", reply.trim_end());
    if !out.status.success() || reply != "echo: from bash\n" {
        return Err("bash's client did not get its reply".into());
    }
    for line in lines {
        println!("{}", line?);
    }
    Ok(())
}

fn server() -> Result<()> {
    let listener = tcp::Listener::bind("127.0.0.1:0")?;
    // First line: the address, for the parent.
    println!("{}", listener.local_addr()?);
    loop {
        let mut connection = listener.accept_bytes()?;
        connection.set_read_timeout(Some(WAIT));
        println!("server: accepted a connection");
        let mut replies = &connection;
        for request in BufReader::new(&connection).lines() {
            let request = request?;
            if request == "bye" {
                println!("server: the client said bye");
                return Ok(());
            }
            writeln!(replies, "echo: {request}")?;
        }
    }
}
