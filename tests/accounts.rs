//! Accounts on real processes: an account registered on one node logs in on another, a
//! registered nick cannot be taken by another connection, wrong passwords are refused and then
//! rate-limited (and logged without the password), `--require-login` holds posts back, and
//! accounts survive a full cluster restart and a snapshot install.

mod common;

use std::time::Duration;

use common::{field, status, wait_for, Client, Cluster, DEADLINE};

/// Retries `line` on `client` until its final line starts with `want` (a follower may not have
/// applied the account yet, or the cluster may have no leader for a moment).
fn command_until(client: &mut Client, line: &str, want: &str) -> String {
    wait_for(&format!("'{line}' to answer '{want}…'"), DEADLINE, || {
        let reply = client.command(line).ok()?;
        if reply.final_line.starts_with(want) {
            Some(reply.final_line)
        } else {
            std::thread::sleep(Duration::from_millis(100));
            None
        }
    })
}

fn final_line(client: &mut Client, line: &str) -> String {
    client.command(line).expect("reply").final_line
}

/// Waits until node `id` has applied the account `nick` (visible as `nick` being refused).
fn wait_registered(cluster: &Cluster, id: usize, nick: &str) {
    let mut probe = cluster.client(id);
    command_until(
        &mut probe,
        &format!("nick {nick}"),
        &format!("err nick {nick} is registered: login first"),
    );
}

#[test]
fn register_on_one_node_login_on_another_and_the_nick_is_protected() {
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut alice = cluster.client(0);
    assert_eq!(
        command_until(&mut alice, "register alice s3cret-pw", "ack registered"),
        "ack registered alice, logged in as alice"
    );
    assert_eq!(
        final_line(&mut alice, "register alice other-pw"),
        "err nick alice is already registered"
    );
    let position = final_line(&mut alice, "msg hello as alice");
    assert!(position.starts_with("ack "), "{position}");

    // Another connection, on another node: the nick is protected once node 2 applied it.
    wait_registered(&cluster, 2, "alice");
    let mut mallory = cluster.client(2);
    assert_eq!(
        final_line(&mut mallory, "nick alice"),
        "err nick alice is registered: login first"
    );
    assert_eq!(
        final_line(&mut mallory, "login alice wrong-pass"),
        "err login failed: wrong nick or password"
    );
    // Unregistered nicks keep working as before.
    assert_eq!(final_line(&mut mallory, "nick mallory"), "ack nick mallory");
    assert!(final_line(&mut mallory, "msg hi").starts_with("ack "));

    // The owner logs in on node 2 with the right password and posts as alice there.
    let mut alice2 = cluster.client(2);
    assert_eq!(
        final_line(&mut alice2, "login alice s3cret-pw"),
        "ack logged in as alice"
    );
    assert_eq!(final_line(&mut alice2, "nick alice"), "ack nick alice");
    assert!(final_line(&mut alice2, "msg from node 2").starts_with("ack "));
    let log = cluster.chat_log(1);
    assert!(
        log.iter().any(|l| l.ends_with("<alice> from node 2")),
        "{log:?}"
    );

    // passwd: the old password is checked, the new one works everywhere after.
    assert_eq!(
        final_line(&mut alice2, "passwd wrong-old n3w-passwd"),
        "err login failed: wrong nick or password"
    );
    assert_eq!(
        final_line(&mut alice2, "passwd s3cret-pw n3w-passwd"),
        "ack password changed"
    );
    let mut later = cluster.client(1);
    command_until(
        &mut later,
        "login alice n3w-passwd",
        "ack logged in as alice",
    );
    assert_eq!(
        final_line(&mut cluster.client(1), "login alice s3cret-pw"),
        "err login failed: wrong nick or password"
    );

    // Logged out, the connection may no longer post as alice.
    assert_eq!(final_line(&mut later, "logout"), "ack logged out of alice");
    assert_eq!(
        final_line(&mut later, "nick alice"),
        "err nick alice is registered: login first"
    );
    assert_eq!(final_line(&mut later, "logout"), "err not logged in");

    // A nick chosen before someone registered it can no longer post under it.
    let mut early = cluster.client(0);
    assert_eq!(final_line(&mut early, "nick bob"), "ack nick bob");
    let mut bob = cluster.client(1);
    command_until(&mut bob, "register bob b0b-passwd", "ack registered bob");
    wait_registered(&cluster, 0, "bob");
    assert_eq!(
        final_line(&mut early, "msg i am bob"),
        "err nick bob is registered: login first"
    );
}

#[test]
fn wrong_passwords_are_refused_then_rate_limited_and_logged_without_the_password() {
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(&[0]);
    let mut owner = cluster.client(0);
    command_until(
        &mut owner,
        "register carol c4rol-pass",
        "ack registered carol",
    );

    let mut guesser = cluster.client(0);
    for _ in 0..3 {
        assert_eq!(
            final_line(&mut guesser, "login carol guess-guess"),
            "err login failed: wrong nick or password"
        );
    }
    // The fourth try is refused without checking, even with the right password.
    let refused = final_line(&mut guesser, "login carol c4rol-pass");
    let wait_ms: u64 = refused
        .strip_prefix("err login refused: too many failures, try again in ")
        .and_then(|rest| rest.strip_suffix(" ms"))
        .and_then(|ms| ms.parse().ok())
        .unwrap_or_else(|| panic!("not a refusal: {refused}"));
    assert!((1..=1_000).contains(&wait_ms), "{refused}");
    // The limit is per nick too: a fresh connection is refused for carol as well ...
    let mut other = cluster.client(0);
    assert!(final_line(&mut other, "login carol c4rol-pass").starts_with("err login refused"));
    // ... but not for another nick's account.
    command_until(&mut owner, "register dave d4ve-pass", "ack registered dave");
    assert_eq!(
        final_line(&mut other, "login dave d4ve-pass"),
        "ack logged in as dave"
    );
    // After the wait, the right password works again.
    let line = command_until(&mut other, "login carol c4rol-pass", "ack");
    assert_eq!(line, "ack logged in as carol");
    // Guessing the old password with passwd counts against the same limit.
    for _ in 0..3 {
        assert_eq!(
            final_line(&mut other, "passwd wrong-old1 n3w-pass"),
            "err login failed: wrong nick or password"
        );
    }
    let refused = final_line(&mut other, "passwd c4rol-pass n3w-pass");
    assert!(refused.starts_with("err login refused"), "{refused}");

    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap_or_default();
    assert!(
        log.contains("failed login for nick carol"),
        "failures are logged:\n{log}"
    );
    assert!(!log.contains("guess-guess") && !log.contains("c4rol-pass"));
}

#[test]
fn require_login_holds_posts_until_a_login() {
    let cluster = Cluster::start(1, &["--require-login"]);
    cluster.wait_leader(&[0]);
    let mut client = cluster.client(0);
    let refused = final_line(&mut client, "msg hello");
    assert!(refused.starts_with("err login required"), "{refused}");
    command_until(
        &mut client,
        "register erin 3rin-pass",
        "ack registered erin",
    );
    assert!(final_line(&mut client, "msg hello").starts_with("ack "));
    let log = cluster.chat_log(0);
    assert_eq!(log.len(), 1);
    assert!(log[0].ends_with("<erin> hello"), "{log:?}");
}

#[test]
fn accounts_survive_a_full_restart() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut frank = cluster.client(1);
    command_until(
        &mut frank,
        "register frank fr4nk-pass",
        "ack registered frank",
    );
    for id in 0..3 {
        wait_registered(&cluster, id, "frank");
        let s = status(&cluster, id).expect("status");
        assert_eq!(field(&s, "accounts"), 1);
    }
    for id in 0..3 {
        assert!(cluster.stop(id).success());
    }
    for id in 0..3 {
        cluster.spawn(id);
    }
    cluster.wait_leader(&[0, 1, 2]);
    for id in 0..3 {
        wait_registered(&cluster, id, "frank");
        let mut client = cluster.client(id);
        command_until(
            &mut client,
            "login frank fr4nk-pass",
            "ack logged in as frank",
        );
    }
    assert_eq!(
        final_line(&mut cluster.client(0), "login frank wrong-pass"),
        "err login failed: wrong nick or password"
    );
}

#[test]
fn an_account_reaches_a_node_through_a_snapshot_install() {
    let args = ["--snapshot-entries", "50", "--log-keep-entries", "5"];
    let mut cluster = Cluster::start(3, &args);
    let (leader, _) = cluster.wait_leader(&[0, 1, 2]);
    let lagger = (leader + 1) % 3;
    assert!(cluster.stop(lagger).success());
    let others: Vec<usize> = (0..3).filter(|&i| i != lagger).collect();
    let (leader, _) = cluster.wait_leader(&others);
    let mut client = cluster.client(leader);
    command_until(
        &mut client,
        "register grace gr4ce-pass",
        "ack registered grace",
    );
    for i in 0..300 {
        command_until(&mut client, &format!("msg filler {i}"), "ack ");
    }
    // The lagger holds a handful of entries; once the leader's log starts past them (and past
    // the registration), only a snapshot that includes the account can bring it back.
    wait_for("the leader to compact its log", DEADLINE, || {
        let s = status(&cluster, leader)?;
        (field(&s, "snapshot") >= 50 && field(&s, "log_first") > 20).then_some(())
    });
    cluster.spawn(lagger);
    wait_for(
        "the lagger to install a snapshot",
        Duration::from_secs(60),
        || {
            let log = std::fs::read_to_string(cluster.log_path(lagger)).ok()?;
            log.contains("installed snapshot at index").then_some(())
        },
    );
    wait_registered(&cluster, lagger, "grace");
    let mut there = cluster.client(lagger);
    assert_eq!(
        final_line(&mut there, "login grace gr4ce-pass"),
        "ack logged in as grace"
    );
    assert_eq!(
        final_line(&mut cluster.client(lagger), "login grace wrong-pass"),
        "err login failed: wrong nick or password"
    );
}

#[test]
fn room_owners_kick_and_private_rooms_work_across_nodes_and_restarts() {
    let mut cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let mut alice = cluster.client(0);
    command_until(
        &mut alice,
        "register alice s3cret-pw",
        "ack registered alice",
    );
    assert_eq!(
        final_line(&mut alice, "join secret"),
        "ack joined #secret, posting there now"
    );
    assert_eq!(final_line(&mut alice, "private"), "ack #secret is private");
    assert_eq!(
        final_line(&mut alice, "topic Secret plans"),
        "ack topic of #secret set"
    );

    // bob, on another node: refused until invited.
    let mut bob = cluster.client(1);
    command_until(&mut bob, "register bob b0b-passwd", "ack registered bob");
    assert_eq!(
        final_line(&mut bob, "join secret"),
        "err #secret is private: ask an owner for an invitation"
    );
    assert_eq!(
        final_line(&mut bob, "msg #secret let me in"),
        "err #secret is private: join it first"
    );
    // Not an owner of #general (no one is), nor of #secret.
    assert!(final_line(&mut bob, "op bob").starts_with("err #general has no owner"));
    let mut anonymous = cluster.client(2);
    assert_eq!(
        final_line(&mut anonymous, "kick alice"),
        "err login first: only a room's owners can do that"
    );
    assert_eq!(
        final_line(&mut anonymous, "join secret"),
        "err #secret is private: ask an owner for an invitation"
    );

    assert_eq!(
        final_line(&mut alice, "invite bob"),
        "ack invited bob to #secret"
    );
    assert_eq!(
        final_line(&mut bob, "join secret"),
        "ack joined #secret, posting there now"
    );
    command_until(&mut bob, "topic", "ack topic #secret: Secret plans");
    assert_eq!(
        final_line(&mut bob, "private"),
        "err only an owner of #secret can do that"
    );
    assert!(final_line(&mut bob, "msg hello from bob").starts_with("ack "));
    let push = alice.wait_push("hello from bob");
    assert!(push.contains("#secret <bob> hello from bob"), "{push}");

    // The kick applies on every node: bob's session on node 1 leaves the room, and the
    // invitation is gone.
    assert_eq!(
        final_line(&mut alice, "kick bob"),
        "ack kicked bob from #secret"
    );
    command_until(
        &mut bob,
        "msg #secret still here?",
        "err #secret is private: join it first",
    );
    assert_eq!(
        final_line(&mut bob, "join secret"),
        "err #secret is private: ask an owner for an invitation"
    );
    assert_eq!(
        final_line(&mut alice, "kick alice"),
        "err alice is an owner of #secret: owners cannot be kicked"
    );

    // Owners, privacy and topic survive a full restart.
    for id in 0..3 {
        assert!(cluster.stop(id).success());
    }
    for id in 0..3 {
        cluster.spawn(id);
    }
    cluster.wait_leader(&[0, 1, 2]);
    let mut bob = cluster.client(2);
    command_until(&mut bob, "login bob b0b-passwd", "ack logged in as bob");
    command_until(
        &mut bob,
        "join secret",
        "err #secret is private: ask an owner for an invitation",
    );
    let mut alice = cluster.client(1);
    command_until(
        &mut alice,
        "login alice s3cret-pw",
        "ack logged in as alice",
    );
    assert_eq!(
        final_line(&mut alice, "join secret"),
        "ack joined #secret, posting there now"
    );
    assert_eq!(
        final_line(&mut alice, "topic"),
        "ack topic #secret: Secret plans"
    );
    assert_eq!(
        final_line(&mut alice, "op bob"),
        "ack bob is an owner of #secret"
    );
}

#[test]
fn a_binary_client_cannot_post_as_a_registered_nick_or_into_a_private_room() {
    use raftchat::client::{RetryPolicy, Session, SessionError};
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(&[0]);
    let mut alice = cluster.client(0);
    command_until(
        &mut alice,
        "register alice s3cret-pw",
        "ack registered alice",
    );
    command_until(&mut alice, "join secret", "ack joined #secret");
    assert_eq!(final_line(&mut alice, "private"), "ack #secret is private");

    let policy = RetryPolicy {
        retry_budget: Duration::from_secs(20),
        ..RetryPolicy::default()
    };
    let mut session = Session::open(&cluster.addrs, 0, policy).expect("binary session");
    let refused = |result: Result<u64, SessionError>| match result {
        Err(e) => e.to_string(),
        Ok(position) => panic!("stored at {position}"),
    };
    let as_alice = refused(session.post_blocking("general", "alice", "i am alice"));
    assert!(as_alice.contains("nick alice is registered"), "{as_alice}");
    let private = refused(session.post_blocking("secret", "eve", "peek"));
    assert!(private.contains("#secret is private"), "{private}");
    // Unregistered nicks in public rooms post as before.
    assert_eq!(
        session.post_blocking("general", "eve", "hello").ok(),
        Some(1)
    );
}

/// Retries an account call on a fresh binary connection to `addr` until it is not refused for
/// a reason that passes (the account not applied on that node yet, no leader for a moment).
fn binary_until(
    addr: std::net::SocketAddr,
    what: &str,
    call: impl Fn(&mut raftchat::client::Connection) -> Result<String, raftchat::client::SessionError>,
) -> String {
    wait_for(what, DEADLINE, || {
        let mut conn = raftchat::client::Connection::connect(addr).ok()?;
        match call(&mut conn) {
            Ok(message) => Some(message),
            Err(_) => {
                std::thread::sleep(Duration::from_millis(100));
                None
            }
        }
    })
}

#[test]
fn binary_register_and_login_work_across_protocols_and_nodes() {
    use raftchat::client::{read_log_all, RetryPolicy, Session};
    let cluster = Cluster::start(3, &[]);
    cluster.wait_leader(&[0, 1, 2]);
    let policy = RetryPolicy {
        retry_budget: Duration::from_secs(20),
        ..RetryPolicy::default()
    };

    // Registered over binary on node 0: the session is logged in and posts as alice.
    let mut alice = Session::open(&cluster.addrs, 0, policy).expect("binary session");
    let registered = wait_for("binary register", DEADLINE, || {
        alice.register("alice", "s3cret-pw").ok()
    });
    assert_eq!(registered, "registered alice, logged in as alice");
    let position = alice
        .post_blocking("general", "alice", "binary alice")
        .expect("a logged-in binary session posts as its account");

    // ... and logs in over telnet on node 2.
    wait_registered(&cluster, 2, "alice");
    let mut telnet = cluster.client(2);
    assert_eq!(
        final_line(&mut telnet, "login alice s3cret-pw"),
        "ack logged in as alice"
    );

    // Registered over telnet on node 1, logged in over binary on node 2.
    let mut bob = cluster.client(1);
    command_until(&mut bob, "register bob b0b-passwd", "ack registered bob");
    wait_registered(&cluster, 2, "bob");
    let mut bob_session = Session::open(&cluster.addrs, 2, policy).expect("binary session");
    assert_eq!(
        bob_session.login("bob", "b0b-passwd").expect("login"),
        "logged in as bob"
    );
    bob_session
        .post_blocking("general", "bob", "binary bob")
        .expect("posts as bob");
    // Logged in as bob, the session still may not post as alice.
    let as_alice = bob_session.post_blocking("general", "alice", "not alice");
    assert!(as_alice.is_err(), "{as_alice:?}");

    // passwd over binary; the old password stops working over telnet.
    assert_eq!(
        bob_session
            .passwd("b0b-passwd", "n3w-b0b-pw")
            .expect("passwd"),
        "password changed"
    );
    command_until(
        &mut cluster.client(0),
        "login bob n3w-b0b-pw",
        "ack logged in as bob",
    );
    // Logged out, the session may no longer post as bob.
    assert_eq!(bob_session.logout().expect("logout"), "logged out of bob");
    let refused = bob_session.post_blocking("general", "bob", "after logout");
    let text = refused.expect_err("refused after logout").to_string();
    assert!(text.contains("nick bob is registered"), "{text}");

    let log = read_log_all(cluster.addrs[1]).expect("log");
    assert_eq!(log[position as usize - 1].nick, "alice");
    assert!(log
        .iter()
        .any(|m| m.nick == "bob" && m.text == "binary bob"));
    assert!(!log
        .iter()
        .any(|m| m.text == "not alice" || m.text == "after logout"));
}

#[test]
fn binary_wrong_passwords_are_refused_then_rate_limited_and_logged_without_the_password() {
    use raftchat::client::{Answer, Connection, ErrorKind, SessionError};
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(&[0]);
    let addr = cluster.addrs[0];
    binary_until(addr, "binary register", |c| {
        c.register("carol", "c4rol-pass")
    });

    let mut guesser = Connection::connect(addr).expect("connect");
    let kind_and_message = |result: Result<String, SessionError>| match result {
        Err(SessionError::Answer(Answer::Error { kind, message, .. })) => (kind, message),
        other => panic!("not refused: {other:?}"),
    };
    for _ in 0..3 {
        let (kind, message) = kind_and_message(guesser.login("carol", "guess-guess"));
        assert_eq!(kind, ErrorKind::Rejected);
        assert_eq!(message, "login failed: wrong nick or password");
    }
    // An unknown nick gets the same words.
    let mut other = Connection::connect(addr).expect("connect");
    let (_, unknown) = kind_and_message(other.login("nobody", "guess-guess"));
    assert_eq!(unknown, "login failed: wrong nick or password");
    // The fourth try is refused without checking, even with the right password.
    let (kind, message) = kind_and_message(guesser.login("carol", "c4rol-pass"));
    assert_eq!(kind, ErrorKind::Overloaded);
    assert!(
        message.starts_with("login refused: too many failures"),
        "{message}"
    );
    // Per nick too: a telnet connection is refused for carol as well.
    let mut telnet = cluster.client(0);
    assert!(final_line(&mut telnet, "login carol c4rol-pass").starts_with("err login refused"));
    // After the wait, the right password works again over binary.
    binary_until(addr, "login after the wait", |c| {
        c.login("carol", "c4rol-pass")
    });

    let log = std::fs::read_to_string(cluster.log_path(0)).unwrap_or_default();
    assert!(log.contains("failed login for nick carol"), "{log}");
    assert!(!log.contains("guess-guess") && !log.contains("c4rol-pass"));
}

#[test]
fn binary_posts_under_a_registered_nick_need_a_login_and_require_login_holds() {
    use raftchat::client::{RetryPolicy, Session};
    let cluster = Cluster::start(1, &["--require-login"]);
    cluster.wait_leader(&[0]);
    let policy = RetryPolicy {
        retry_budget: Duration::from_secs(20),
        ..RetryPolicy::default()
    };
    let mut anonymous = Session::open(&cluster.addrs, 0, policy).expect("session");
    let refused = anonymous.post_blocking("general", "eve", "hello");
    let text = refused.expect_err("login required").to_string();
    assert!(text.contains("login required"), "{text}");

    let mut frank = cluster.client(0);
    command_until(
        &mut frank,
        "register frank fr4nk-pass",
        "ack registered frank",
    );
    let mut session = Session::open(&cluster.addrs, 0, policy).expect("session");
    let refused = session.post_blocking("general", "frank", "hello");
    assert!(refused.is_err(), "{refused:?}");
    session.login("frank", "fr4nk-pass").expect("login");
    assert_eq!(
        session.post_blocking("general", "frank", "hello").ok(),
        Some(1)
    );
    let log = cluster.chat_log(0);
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].ends_with("<frank> hello"), "{log:?}");
}

type WsClient = tungstenite::WebSocket<std::net::TcpStream>;

fn ws_connect(addr: std::net::SocketAddr) -> WsClient {
    let stream = std::net::TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let (socket, _) =
        tungstenite::client(format!("ws://{addr}/ws"), stream).expect("WebSocket handshake");
    socket
}

/// Sends `request` with `id` and returns the reply naming that id; every other message read
/// meanwhile (live deliveries) is appended to `seen`.
fn ws_call(
    socket: &mut WsClient,
    id: u64,
    mut request: serde_json::Value,
    seen: &mut Vec<serde_json::Value>,
) -> serde_json::Value {
    request["id"] = id.into();
    socket
        .send(tungstenite::Message::Text(request.to_string()))
        .expect("send");
    loop {
        let message = socket.read().expect("a reply");
        if let tungstenite::Message::Text(text) = message {
            let value: serde_json::Value = serde_json::from_str(&text).expect("JSON");
            if value["id"] == id {
                return value;
            }
            seen.push(value);
        }
    }
}

#[test]
fn websocket_login_register_logout_protect_nicks_and_kick_removes_the_session() {
    use serde_json::json;
    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(&[0]);
    let mut alice = cluster.client(0);
    command_until(
        &mut alice,
        "register alice s3cret-pw",
        "ack registered alice",
    );
    let mut ws = ws_connect(cluster.addrs[0]);
    let mut seen = Vec::new();
    let mut call = |ws: &mut WsClient, id: u64, request: serde_json::Value| {
        ws_call(ws, id, request, &mut seen)
    };

    // The nick is protected from a session that has not logged in.
    let taken = call(&mut ws, 1, json!({"type": "nick", "nick": "alice"}));
    assert_eq!(taken["type"], "err", "{taken}");
    assert_eq!(taken["reason"], "nick alice is registered: login first");
    let wrong = call(
        &mut ws,
        2,
        json!({"type": "login", "nick": "alice", "password": "wrong-pass"}),
    );
    assert_eq!(
        wrong["reason"], "login failed: wrong nick or password",
        "{wrong}"
    );
    let login = call(
        &mut ws,
        3,
        json!({"type": "login", "nick": "alice", "password": "s3cret-pw"}),
    );
    assert_eq!(
        (&login["type"], &login["req"]),
        (&json!("ack"), &json!("login"))
    );
    let posted = call(&mut ws, 4, json!({"type": "msg", "text": "web alice"}));
    assert_eq!(posted["type"], "ack", "{posted}");
    assert!(cluster
        .chat_log(0)
        .iter()
        .any(|l| l.ends_with("<alice> web alice")));

    // register over WebSocket logs in; logout ends it and the nick is protected again.
    let registered = call(
        &mut ws,
        5,
        json!({"type": "register", "nick": "wendy", "password": "w3ndy-pass"}),
    );
    assert_eq!(registered["req"], "register", "{registered}");
    assert_eq!(registered["nick"], "wendy");
    let out = call(&mut ws, 6, json!({"type": "logout"}));
    assert_eq!(out["req"], "logout", "{out}");
    // Logged out, the session posts as anonymous again, as over telnet.
    let posted = call(&mut ws, 7, json!({"type": "msg", "text": "not wendy"}));
    assert_eq!(posted["type"], "ack", "{posted}");
    assert!(cluster
        .chat_log(0)
        .iter()
        .any(|l| l.ends_with("<anonymous> not wendy")));
    let again = call(&mut ws, 8, json!({"type": "logout"}));
    assert_eq!(again["reason"], "not logged in");
    let taken = call(&mut ws, 9, json!({"type": "nick", "nick": "wendy"}));
    assert_eq!(taken["reason"], "nick wendy is registered: login first");
    // The telnet session logs in to the account the WebSocket registered.
    let mut wendy = cluster.client(0);
    assert_eq!(
        final_line(&mut wendy, "login wendy w3ndy-pass"),
        "ack logged in as wendy"
    );

    // kick: alice owns #den; the WebSocket session (as mallory) joined it and is kicked out.
    command_until(&mut alice, "join den", "ack joined #den");
    let nick = call(&mut ws, 10, json!({"type": "nick", "nick": "mallory"}));
    assert_eq!(nick["type"], "ack", "{nick}");
    let joined = call(&mut ws, 11, json!({"type": "join", "room": "den"}));
    assert_eq!(joined["type"], "ack", "{joined}");
    assert!(final_line(&mut alice, "msg before kick").starts_with("ack "));
    let mark = call(
        &mut ws,
        12,
        json!({"type": "msg", "room": "general", "text": "m1"}),
    );
    assert_eq!(mark["type"], "ack", "{mark}");
    assert_eq!(
        final_line(&mut alice, "kick mallory"),
        "ack kicked mallory from #den"
    );
    assert!(final_line(&mut alice, "msg after kick").starts_with("ack "));
    let mark = call(
        &mut ws,
        13,
        json!({"type": "msg", "room": "general", "text": "m2"}),
    );
    assert_eq!(mark["type"], "ack", "{mark}");
    let texts: Vec<&str> = seen.iter().filter_map(|v| v["text"].as_str()).collect();
    assert!(texts.contains(&"before kick"), "{texts:?}");
    assert!(!texts.contains(&"after kick"), "{texts:?}");
}

/// The replicated state a rejected request must leave alone.
fn state_of(cluster: &Cluster) -> (u64, u64, u64) {
    let status = status(cluster, 0).expect("status");
    let get = |key| field(&status, key);
    (get("commit"), get("accounts"), get("messages"))
}

#[test]
fn random_rejected_account_and_room_input_changes_no_state() {
    use raftchat::chat::telnet::parse_line;
    use raftchat::client::proto::{Answer, Request};
    use raftchat::client::Connection;
    use rand::{rngs::SmallRng, Rng, SeedableRng};
    use std::io::{Read, Write};

    let cluster = Cluster::start(1, &[]);
    cluster.wait_leader(&[0]);
    let mut alice = cluster.client(0);
    command_until(
        &mut alice,
        "register alice s3cret-pw",
        "ack registered alice",
    );
    command_until(&mut alice, "join den", "ack joined #den");
    let before = state_of(&cluster);

    // Telnet: random lines over the new commands' words that the parser refuses (fixed seed,
    // bounded), each answered with one `err` line.
    let words = [
        "register",
        "login",
        "logout",
        "passwd",
        "op",
        "kick",
        "topic",
        "private",
        "invite",
        "alice",
        "s3cret-pw",
        "x",
        "#den",
        "é",
        "a b",
        "--",
        "0123456789abcdef0123456789abcdef",
    ];
    let mut rng = SmallRng::seed_from_u64(0xACC7_0018);
    let mut sent = 0;
    while sent < 600 {
        let mut line = String::new();
        for _ in 0..rng.gen_range(1..5) {
            if rng.gen_bool(0.8) {
                line.push_str(words[rng.gen_range(0..words.len())]);
            } else {
                line.extend((0..rng.gen_range(1..8)).map(|_| rng.gen_range(b'!'..=b'~') as char));
            }
            if rng.gen_bool(0.6) {
                line.push(' ');
            }
        }
        if line.trim().is_empty() || parse_line(line.as_bytes()).is_ok() {
            continue;
        }
        let reply = final_line(&mut alice, &line);
        assert!(reply.starts_with("err "), "{line:?} -> {reply}");
        sent += 1;
    }

    // Binary: account requests the server must refuse (bad nicks and passwords, a taken nick,
    // passwd and logout without a login), and mutated frames that close only that connection.
    let mut conn = Connection::connect(cluster.addrs[0]).expect("connect");
    let bad_nicks = ["", "a b", "#den", "é", "x".repeat(64).leak()];
    for i in 0..200u64 {
        let nick = bad_nicks[rng.gen_range(0..bad_nicks.len())].to_string();
        let short: String = (0..rng.gen_range(0..6)).map(|_| 'p').collect();
        let request = match i % 5 {
            0 => Request::Register {
                req_id: i,
                nick,
                password: "s3cret-pw".into(),
            },
            1 => Request::Register {
                req_id: i,
                nick: "alice".into(),
                password: if rng.gen_bool(0.5) {
                    short
                } else {
                    "0ther-pw".into()
                },
            },
            2 => Request::Login {
                req_id: i,
                nick,
                password: short,
            },
            3 => Request::Passwd {
                req_id: i,
                old: "s3cret-pw".into(),
                new: "n3w-passwd".into(),
            },
            _ => Request::Logout { req_id: i },
        };
        match conn.call(&request).expect("an answer") {
            Answer::Error { .. } => {}
            other => panic!("{request:?} accepted: {other:?}"),
        }
    }
    for i in 0..20 {
        let mut frame = Vec::new();
        raftchat::client::proto::encode_preamble(&mut frame);
        let start = frame.len();
        Request::Register {
            req_id: i,
            nick: "mallory".into(),
            password: "m4llory-pw".into(),
        }
        .encode(&mut frame);
        let at = rng.gen_range(start + 4..frame.len());
        frame[at] ^= 1 << rng.gen_range(0..8);
        let mut stream = std::net::TcpStream::connect(cluster.addrs[0]).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream.write_all(&frame).expect("send");
        let mut rest = Vec::new();
        // The node answers with a protocol error and closes the connection.
        let _ = stream.read_to_end(&mut rest);
    }

    assert_eq!(
        state_of(&cluster),
        before,
        "rejected input changed the state"
    );
    let log = cluster.chat_log(0);
    assert!(log.is_empty(), "{log:?}");
    // The node still serves, and the account still works.
    assert_eq!(
        final_line(&mut cluster.client(0), "login alice s3cret-pw"),
        "ack logged in as alice"
    );
}
