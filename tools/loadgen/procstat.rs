//! Local node processes as Linux shows them in /proc: which process listens on a port
//! ([`listening_inodes`] over /proc/net/tcp{,6}, then /proc/*/fd socket links) and how much CPU
//! it has used ([`parse_cpu_ticks`] of `/proc/<pid>/stat`). It only reads /proc and runs
//! `getconf CLK_TCK`; it never signals or otherwise touches a process.

use std::fs;
use std::process::Command;

/// TCP state LISTEN in /proc/net/tcp.
const TCP_LISTEN: &str = "0A";
/// Linux's usual clock tick rate, assumed when `getconf CLK_TCK` does not answer.
pub const CLK_TCK_ASSUMED: u64 = 100;

/// utime + stime, in clock ticks, from the text of `/proc/<pid>/stat`. The command name in
/// parentheses may hold spaces and parentheses, so fields are counted after the LAST `)`.
pub fn parse_cpu_ticks(stat: &str) -> Result<u64, String> {
    let close = stat.rfind(')').ok_or("/proc stat line has no `(comm)`")?;
    // After `)`: state is field 3 of the line, utime field 14, stime field 15.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let field = |n: usize| -> Result<u64, String> {
        let raw = fields
            .get(n - 3)
            .ok_or_else(|| format!("/proc stat line has no field {n}"))?;
        raw.parse()
            .map_err(|_| format!("/proc stat field {n}: '{raw}' is not a number"))
    };
    Ok(field(14)? + field(15)?)
}

/// The socket inodes listening on `port` in the text of /proc/net/tcp or /proc/net/tcp6.
/// Lines that do not parse are skipped (the header among them).
pub fn listening_inodes(net_tcp: &str, port: u16) -> Vec<u64> {
    net_tcp
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            let listening = f.get(3)? == &TCP_LISTEN;
            let matches = u16::from_str_radix(local_port, 16).ok()? == port;
            (listening && matches).then(|| f.get(9)?.parse().ok())?
        })
        .collect()
}

/// The pid of the local process listening on `port`, if this user can see it.
pub fn pid_listening_on(port: u16) -> Option<u32> {
    let inodes: Vec<u64> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| fs::read_to_string(p).ok())
        .flat_map(|text| listening_inodes(&text, port))
        .collect();
    if inodes.is_empty() {
        return None;
    }
    let links: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let fds = fs::read_dir(entry.path().join("fd")).ok()?;
        fds.flatten()
            .filter_map(|fd| fs::read_link(fd.path()).ok())
            .any(|target| links.iter().any(|l| target.as_os_str() == l.as_str()))
            .then_some(pid)
    })
}

/// utime + stime of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Result<u64, String> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    parse_cpu_ticks(&stat)
}

/// Clock ticks per second from `getconf CLK_TCK`; `None` when it does not answer.
pub fn clk_tck() -> Option<u64> {
    let out = Command::new("getconf").arg("CLK_TCK").output().ok()?;
    let ticks: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    (out.status.success() && ticks > 0).then_some(ticks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_are_utime_plus_stime_even_with_odd_command_names() {
        let stat =
            "4242 (server) S 1 4242 4242 0 -1 4194560 900 0 0 0 150 37 0 0 20 0 3 0 1000 1 1";
        assert_eq!(parse_cpu_ticks(stat), Ok(187));
        let odd = "4242 (my (odd) srv) R 1 4242 4242 0 -1 4194560 900 0 0 0 5 6 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(odd), Ok(11));
    }

    #[test]
    fn broken_stat_lines_are_errors() {
        assert!(parse_cpu_ticks("").is_err());
        assert!(parse_cpu_ticks("4242 (server) S 1 2 3")
            .unwrap_err()
            .contains("14"));
        let garbled = "4242 (server) S 1 4242 4242 0 -1 4194560 900 0 0 0 x 37 0";
        assert!(parse_cpu_ticks(garbled).unwrap_err().contains("'x'"));
    }

    #[test]
    fn only_listening_sockets_on_the_port_are_found() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 0100007F:4E20 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1 0 100 0 0 10 0\n   \
            1: 0100007F:4E21 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 222 1 0 100 0 0 10 0\n   \
            2: 0100007F:4E20 0100007F:9C40 01 00000000:00000000 00:00000000 00000000  1000        0 333 1 0 100 0 0 10 0\n";
        assert_eq!(listening_inodes(tcp, 20000), vec![111]);
        assert_eq!(listening_inodes(tcp, 20001), vec![222]);
        assert!(listening_inodes(tcp, 20002).is_empty());
        let tcp6 = "  sl  local_address remote_address st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
            0: 00000000000000000000000001000000:4E20 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1 0\n";
        assert_eq!(listening_inodes(tcp6, 20000), vec![444]);
        assert!(listening_inodes("garbage\n\n  0: nonsense", 20000).is_empty());
    }

    #[test]
    fn this_process_is_found_by_its_listening_port_and_its_cpu_time_read() {
        // Linux only (the tool's documented platform).
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        assert_eq!(pid_listening_on(port), Some(std::process::id()));
        drop(listener);
        assert_eq!(pid_listening_on(port), None, "closed: nobody listens");
        assert!(cpu_ticks(std::process::id()).is_ok());
        assert!(cpu_ticks(u32::MAX).is_err(), "no such process");
    }
}
