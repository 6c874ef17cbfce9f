//! A TCP client and server, on the loopback interface.
//!
//! From the course notes `004_f923ffdb808308aa.txt`, section "4. Sockets" (a bidirectional
//! endpoint, like a telephone; a stream socket (TCP) gives reliable, ordered delivery, like a
//! phone call; used by web clients and servers), with `003_aa59fdfdb716713a.txt`, "Sockets"
//! (processes open sockets and connect them; what one writes the other reads; the OS moves the
//! data through the socket buffers) and `002_aa004447b60a7019.txt`, "Common IPC Mechanisms".
//!
//! `cargo run --example tcp_client_server`: the server (this program again, `server`) listens on
//! `127.0.0.1` at a port the kernel picks and tells its parent which; the client (this
//! process) connects, sends requests and reads each reply on the same connection, then says
//! `bye`, and the server exits. Loopback only: nothing leaves the machine.
//!
//! ipckit's TCP connection carries length-prefixed messages today (see `ipckit::socket::tcp`),
//! so a plain tool such as `nc` cannot be the other end until it has a byte-stream form.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use ipckit::socket::tcp;
use ipckit::{MessageReceiver, MessageSender};

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
    let outcome = client(&mut server);
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

fn client(server: &mut std::process::Child) -> Result<()> {
    // The server's first line is its address; the rest of its output follows ours.
    let mut lines = BufReader::new(server.stdout.take().ok_or("piped")?).lines();
    let addr = lines.next().ok_or("the server exited before listening")??;
    let mut connection = tcp::connect(addr.as_str())?;
    println!("client: connected to {addr}");
    for request in ["hello", "how are you?"] {
        connection.send(request.as_bytes())?;
        let reply = connection.recv_timeout(WAIT)?;
        let reply = String::from_utf8(reply.data)?;
        println!("client: sent {request:?}, the server replied {reply:?}");
        if reply != format!("echo: {request}") {
            return Err("a reply does not match its request".into());
        }
    }
    connection.send(b"bye")?;
    for line in lines {
        println!("{}", line?);
    }
    Ok(())
}

fn server() -> Result<()> {
    let listener = tcp::Listener::bind("127.0.0.1:0")?;
    // First line: the address, for the parent.
    println!("{}", listener.local_addr()?);
    let mut connection = listener.accept()?;
    println!("server: accepted a connection");
    loop {
        let request = String::from_utf8(connection.recv_timeout(WAIT)?.data)?;
        if request == "bye" {
            println!("server: the client said bye");
            return Ok(());
        }
        connection.send(format!("echo: {request}").as_bytes())?;
    }
}
