//! Services across processes: eight clients at once with one killed mid-call, refusal by uid.

mod common;

use std::io::BufReader;
use std::sync::mpsc;
use std::time::Duration;

use common::{
    reports, role, spawn_role, unique_name, wait_for_line, wait_with_watchdog, with_watchdog,
};
use ipckit::service::{Client, Server};
use ipckit::{Deadline, Error};

const WATCHDOG: Duration = Duration::from_secs(60);

#[test]
fn eight_clients_are_served_and_one_killed_mid_call_disturbs_none() {
    const TEST: &str = "eight_clients_are_served_and_one_killed_mid_call_disturbs_none";
    if let Some((role, name)) = role() {
        let (mut conn, welcome) =
            Client::connect(&name, b"hello", Deadline::after(WATCHDOG)).unwrap();
        assert_eq!(welcome, b"welcome");
        if role == "victim" {
            assert_eq!(
                conn.call(b"warm-up", Deadline::after(WATCHDOG)).unwrap(),
                b"warm-up!"
            );
            println!("@@calling");
            // The server holds this reply back; we are killed while waiting for it.
            let _ = conn.call(b"slow", Deadline::after(WATCHDOG));
            return;
        }
        for i in 0..50 {
            let request = format!("{}:{i}", std::process::id());
            let reply = conn
                .call(request.as_bytes(), Deadline::after(WATCHDOG))
                .unwrap();
            assert_eq!(reply, format!("{request}!").into_bytes());
        }
        println!("@@done");
        return;
    }
    let name = unique_name("svc");
    let server = Server::bind(&name, 0o600).unwrap();
    let (outcomes_tx, outcomes) = mpsc::channel();
    let (mid_call_tx, mid_call) = mpsc::channel();
    let acceptor = std::thread::spawn(move || {
        for _ in 0..8 {
            let pending = server.accept().unwrap();
            assert_eq!(pending.payload(), b"hello");
            let mut conn = pending.accept(b"welcome").unwrap();
            let outcomes_tx = outcomes_tx.clone();
            let mid_call_tx = mid_call_tx.clone();
            std::thread::spawn(move || loop {
                match conn.next_request(Deadline::after(WATCHDOG)) {
                    Ok(request) => {
                        if request.data == b"slow" {
                            // The victim now waits for this reply: have it killed meanwhile.
                            mid_call_tx.send(()).unwrap();
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        let mut reply = request.data.clone();
                        reply.push(b'!');
                        // A reply to a dead client lands in a channel nobody reads: harmless.
                        let _ = conn.reply(request.id, &reply);
                    }
                    Err(e) => {
                        let outcome = match e {
                            Error::Disconnected => "Disconnected".to_string(),
                            other => other.to_string(),
                        };
                        outcomes_tx.send(outcome).unwrap();
                        return;
                    }
                }
            });
        }
    });
    let mut clients: Vec<_> = (0..7).map(|_| spawn_role(TEST, "client", &name)).collect();
    let mut victim = spawn_role(TEST, "victim", &name);
    let mut out = BufReader::new(victim.stdout.take().unwrap());
    wait_for_line(&mut out, "calling");
    mid_call
        .recv_timeout(WATCHDOG)
        .expect("the victim's slow call reached the server");
    victim.kill().unwrap();
    victim.wait().unwrap();
    for client in &mut clients {
        assert_eq!(reports(client), ["done"]);
        assert!(wait_with_watchdog(client, WATCHDOG).success());
    }
    acceptor.join().unwrap();
    let ends: Vec<String> = with_watchdog(WATCHDOG, move || {
        (0..8).map(|_| outcomes.recv().unwrap()).collect()
    });
    assert!(ends.iter().all(|e| e == "Disconnected"), "{ends:?}");
}

#[test]
fn a_server_can_refuse_by_uid_and_the_client_learns_why() {
    const TEST: &str = "a_server_can_refuse_by_uid_and_the_client_learns_why";
    if let Some((_, name)) = role() {
        // SAFETY: plain system calls in a single-threaded role process.
        assert!(unsafe { libc::setgid(65534) == 0 && libc::setuid(65534) == 0 });
        match Client::connect(&name, b"let me in", Deadline::after(WATCHDOG)) {
            Err(Error::PermissionDenied { object }) if object.contains("only root") => {
                println!("@@refused")
            }
            other => println!("@@unexpected {:?}", other.map(|(_, r)| r)),
        }
        return;
    }
    let name = unique_name("svcuid");
    let server = Server::bind(&name, 0o666).unwrap();
    let acceptor = std::thread::spawn(move || {
        let pending = server.accept().unwrap();
        let uid = pending.peer().uid;
        assert_eq!(uid, 65534);
        pending.refuse("only root may use this service").unwrap();
    });
    let mut child = spawn_role(TEST, "nobody", &name);
    assert_eq!(reports(&mut child), ["refused"]);
    assert!(wait_with_watchdog(&mut child, WATCHDOG).success());
    acceptor.join().unwrap();
    assert!(matches!(
        Client::connect(&unique_name("absent"), b"", Deadline::Now),
        Err(Error::NotFound { .. })
    ));
}
