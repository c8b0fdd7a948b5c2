#!/usr/bin/env python3
"""Browser test: two headless Chromium pages on two nodes chat with each other and with a
telnet client on a third node; then the second page's node is killed (-9) and the page must
reconnect to another node and chat on; then the node both pages are on is stopped (SIGSTOP:
silent, not closed) and both must notice and move on. Five nodes. Screenshots go to
target/browser_test/.

    python3 tools/browser_test.py            (after `cargo build --release --bin cluster`)

Needs Debian's chromium and chromium-driver and Selenium:
    apt-get update && apt-get install -y chromium chromium-driver && pip install selenium
(`--install` runs those for you). Starts its own cluster on free loopback ports with
target/release/cluster, stops it at the end, and exits 0 only when every page and the telnet
client saw every message. It never talks to anything but 127.0.0.1.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHOTS = os.path.join(ROOT, "target", "browser_test")
DEADLINE_S = 30
# Five nodes: with one killed and one stopped, three still make a majority.
NODES = 5


def install():
    subprocess.run(["apt-get", "update", "-qq"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "selenium"], check=True)


def free_base_port(nodes):
    """A base port whose next `nodes` ports are free right now."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = 30000 + s.getsockname()[1] % 20000
        if all(port_free(base + i) for i in range(nodes)):
            return base
    raise RuntimeError("no free port range")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def wait_for(what, predicate, deadline_s=DEADLINE_S):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            if predicate():
                return
        except Exception:  # not ready yet: keep polling until the deadline
            pass
        time.sleep(0.1)
    raise AssertionError("timed out waiting for " + what)


def http_ok(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=2) as r:
        return r.status == 200


class Telnet:
    """A line client on the telnet protocol, reading pushes as they come."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=0.2)
        self.text = ""

    def send(self, line):
        self.sock.sendall((line + "\r\n").encode())

    def poll(self):
        try:
            data = self.sock.recv(65536)
            self.text += data.decode("utf-8", "replace")
        except socket.timeout:
            pass
        return self.text

    def wait(self, needle):
        wait_for("telnet to show %r" % needle, lambda: needle in self.poll())


def node_pid(cluster_pid, node):
    """The pid of node `node`: the cluster's child started as `--run-node <node> ...`."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                args = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if ppid == cluster_pid and b"--run-node" in args:
            i = args.index(b"--run-node")
            if args[i + 1:i + 2] == [str(node).encode()]:
                return int(entry)
    raise AssertionError("node %d of cluster %d not found" % (node, cluster_pid))


def is_leader(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=2) as r:
        return "raftchat_server_is_leader 1" in r.read().decode()


def make_leader(base, node):
    """Asks the leader (over telnet) to hand leadership to `node`; waits until it leads."""
    end = time.monotonic() + DEADLINE_S
    while not is_leader(base + node):
        assert time.monotonic() < end, "node %d never took the lead" % node
        leader = next((i for i in range(NODES) if is_leader(base + i)), None)
        if leader is not None:
            admin = Telnet(base + leader)
            admin.send("transfer %d" % node)
            time.sleep(1)
            admin.sock.close()
        else:
            time.sleep(0.2)


def kill(pid):
    os.kill(pid, signal.SIGKILL)


def browser(width, height):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=%d,%d" % (width, height)]:
        opts.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver")
    return webdriver.Chrome(options=opts, service=service)


class Page:
    def __init__(self, driver, port, nick):
        from selenium.webdriver.common.by import By

        self.by = By
        self.driver = driver
        driver.get("http://127.0.0.1:%d/" % port)
        wait_for("page on %d to connect" % port,
                 lambda: "connected" in self.find("status").text)
        nick_field = self.find("nick")
        nick_field.clear()
        nick_field.send_keys(nick + "\n")
        wait_for("nick %s to be acknowledged" % nick,
                 lambda: driver.execute_script("return localStorage.getItem('raftchat.nick')") == nick)

    def find(self, element_id):
        return self.driver.find_element(self.by.ID, element_id)

    def say(self, text):
        box = self.find("input")
        box.send_keys(text + "\n")
        # Focus stays in the input: the next keystrokes go there too.
        assert self.driver.switch_to.active_element == box, "focus left the input"

    def wait_line(self, nick, text):
        wait_for("%s in the page" % text,
                 lambda: any(("<%s>" % nick) in line.text and text in line.text
                             for line in self.driver.find_elements(self.by.CSS_SELECTOR, "#log .msg:not(.pending)")))

    def shot(self, name):
        os.makedirs(SHOTS, exist_ok=True)
        path = os.path.join(SHOTS, name + ".png")
        self.driver.save_screenshot(path)
        print("screenshot:", os.path.relpath(path, ROOT))


def run(base, cluster_pid):
    alice = Page(browser(1100, 700), base, "alice")
    bob = Page(browser(420, 700), base + 1, "bob")
    carol = Telnet(base + 2)
    stopped = []
    try:
        carol.wait("hello raftchat node 2")
        carol.send("nick carol")
        carol.wait("ack nick carol")
        alice.say("Hello from a browser on node 0")
        bob.wait_line("alice", "Hello from a browser on node 0")
        carol.wait("<alice> Hello from a browser on node 0")
        bob.say("And hello from node 1, on a narrow window")
        alice.wait_line("bob", "And hello from node 1")
        carol.wait("<bob> And hello from node 1")
        carol.send("msg Telnet says hi to both")
        alice.wait_line("carol", "Telnet says hi to both")
        bob.wait_line("carol", "Telnet says hi to both")
        alice.say("/join rust")
        alice.say("Rust room, anyone?")
        wait_for("alice's room list to show rust",
                 lambda: "rust" in alice.find("rooms").text)
        alice.shot("alice_node0")
        bob.shot("bob_node1_narrow")
        metrics = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % base, timeout=2).read().decode()
        assert "raftchat_client_connections{protocol=\"websocket\"}" in metrics, "metrics count the pages"
        # Bob's node, made the leader, goes away (kill -9): his page moves to another node and
        # chats on; his first post there meets an election and is retried until a leader takes it.
        make_leader(base, 1)
        kill(node_pid(cluster_pid, 1))
        wait_for("bob's page to reconnect to another node",
                 lambda: "connected to" in bob.find("status").text
                 and ":%d" % (base + 1) not in bob.find("status").text
                 and "node 1 " not in bob.find("status").text)
        print("bob's page after node 1 died:", bob.find("status").text)
        bob.say("Still here after node 1 died")
        alice.say("/join general")
        alice.wait_line("bob", "Still here after node 1 died")
        carol.wait("<bob> Still here after node 1 died")
        bob.wait_line("alice", "Hello from a browser on node 0")
        bob.shot("bob_after_node1_died")
        # Node 0, where both pages are now, stops (SIGSTOP: its sockets stay open and silent).
        # Both pages notice the silence through their probes and move on (three of the five
        # nodes still make a majority).
        stopped.append(node_pid(cluster_pid, 0))
        os.kill(stopped[-1], signal.SIGSTOP)
        for page in (alice, bob):
            wait_for("a page to leave the stopped node 0",
                     lambda page=page: "connected to" in page.find("status").text
                     and "node 0 " not in page.find("status").text)
        print("pages after node 0 stopped:", alice.find("status").text, "|", bob.find("status").text)
        bob.say("Node 0 went silent, we moved on")
        alice.wait_line("bob", "Node 0 went silent, we moved on")
        carol.wait("<bob> Node 0 went silent, we moved on")
        alice.shot("alice_after_node0_stopped")
        # A status line sits where it happened, not under the messages that came after it.
        lines = [e.text for e in alice.driver.find_elements(alice.by.CSS_SELECTOR, "#log > div")]
        silent = [i for i, t in enumerate(lines) if "node silent" in t]
        later = [i for i, t in enumerate(lines) if "Node 0 went silent, we moved on" in t]
        assert silent and later and silent[-1] < later[0], "status line out of place: %r" % lines
        print("browser test: passed")
    except Exception:
        alice.shot("FAILED_alice")
        bob.shot("FAILED_bob")
        raise
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        for page in (alice, bob):
            page.driver.quit()


def main():
    if "--install" in sys.argv:
        install()
    cluster = os.path.join(ROOT, "target", "release", "cluster")
    if not os.path.exists(cluster):
        sys.exit("build first: cargo build --release --bin cluster")
    base = free_base_port(NODES)
    data = tempfile.mkdtemp(prefix="raftchat-browser-")
    log = open(os.path.join(data, "cluster.log"), "w")
    proc = subprocess.Popen([cluster, "--nodes", str(NODES), "--base-port", str(base),
                             "--data-dir", data],
                            stdout=log, stderr=subprocess.STDOUT)
    try:
        for i in range(NODES):
            wait_for("node %d to serve /" % i, lambda i=i: http_ok(base + i, "/"))
        run(base, proc.pid)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(data, ignore_errors=True)


if __name__ == "__main__":
    main()
