//! HTTP/1.1 request heads in, responses out: the part of HTTP a node needs to serve its chat
//! page, `/ws`, `/metrics` and `/health` from its event loop.
//!
//! The shape is mini-redis's: [`check`] looks at the bytes received so far and answers
//! [`Check::Incomplete`] (read more), [`Check::Invalid`] (answer with that status and close) or
//! [`Check::Complete`] (the head is that many bytes); only then does [`parse`] borrow the
//! method, target and headers out of the head. Both are bounded: a request line, each header
//! line, the number of headers and the whole head have limits, so a slow or hostile client
//! costs at most [`HEAD_BYTES_MAX`] bytes of buffer and is refused as soon as it crosses one.
//! [`route`] then maps method and path to one of the node's endpoints.
//!
//! This module never touches a socket, never reads a body (the node serves only `GET`; a
//! request with a body is refused) and never panics on any input: every refusal is an
//! [`Invalid`] with a status code and a short reason.

/// The longest request line accepted (method, target, version); longer is 414.
pub const REQUEST_LINE_BYTES_MAX: usize = 2048;
/// The longest single header line accepted; longer is 431.
pub const HEADER_LINE_BYTES_MAX: usize = 4096;
/// The largest head (request line, headers, blank line) accepted; larger is 431.
pub const HEAD_BYTES_MAX: usize = 8192;
/// The most header lines accepted; more is 431.
pub const HEADERS_MAX: usize = 64;
/// How long a connection may take to send a whole head before the front-end answers 408 and
/// closes (a request that never finishes must not hold a connection slot forever).
pub const HEAD_DEADLINE_MS: u64 = 10_000;
/// The longest method token accepted (the longest standard one, `OPTIONS`, is 7).
const METHOD_BYTES_MAX: usize = 16;

/// Why a request is refused: the status to answer with and one human line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub status: u16,
    pub reason: &'static str,
}

impl Invalid {
    pub const fn new(status: u16, reason: &'static str) -> Self {
        Invalid { status, reason }
    }
}

/// What the bytes received so far amount to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// No complete head yet and no limit crossed: read more.
    Incomplete,
    /// Refuse with this status and close the connection.
    Invalid(Invalid),
    /// A well-formed head of this many bytes (blank line included) starts the buffer.
    Complete(usize),
}

/// One request head, borrowed from the buffer it was parsed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target as sent, query included (`/ws?x=1`).
    pub target: &'a str,
    /// The target without its query (`/ws`).
    pub path: &'a str,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    /// Header names as sent (compare with [`Request::header`], which ignores case) and raw values
    /// without surrounding blanks.
    pub headers: Vec<(&'a str, &'a [u8])>,
}

/// The node's endpoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Page,
    WebSocket,
    Metrics,
    Health,
}

/// Looks at the bytes received so far; see the module doc.
pub fn check(buf: &[u8]) -> Check {
    let scan = &buf[..buf.len().min(HEAD_BYTES_MAX)];
    let mut start = 0;
    let mut lines = 0usize;
    loop {
        let Some(offset) = scan[start..].iter().position(|&b| b == b'\n') else {
            return check_partial(buf, &scan[start..], lines);
        };
        let end = start + offset + 1;
        let line = strip_cr(&scan[start..start + offset]);
        let verdict = if lines == 0 {
            request_line(line).map(|_| ())
        } else if line.is_empty() {
            return Check::Complete(end);
        } else if lines > HEADERS_MAX {
            Err(Invalid::new(431, "too many header lines"))
        } else if line.len() > HEADER_LINE_BYTES_MAX {
            Err(Invalid::new(431, "header line too long"))
        } else {
            header_line(line).map(|_| ())
        };
        if let Err(invalid) = verdict {
            return Check::Invalid(invalid);
        }
        lines += 1;
        start = end;
    }
}

/// The verdict on an unfinished line: a limit already crossed, garbage already visible in the
/// method, or read more.
fn check_partial(buf: &[u8], partial: &[u8], lines: usize) -> Check {
    if buf.len() >= HEAD_BYTES_MAX {
        return Check::Invalid(Invalid::new(431, "request head too large"));
    }
    if lines == 0 {
        if partial.len() > REQUEST_LINE_BYTES_MAX {
            return Check::Invalid(Invalid::new(414, "request line too long"));
        }
        let method_end = partial
            .iter()
            .position(|&b| b == b' ')
            .unwrap_or(partial.len());
        let method = &partial[..method_end];
        if method.len() > METHOD_BYTES_MAX || !method.iter().all(|&b| is_tchar(b)) {
            return Check::Invalid(Invalid::new(400, "malformed request line"));
        }
    } else if partial.len() > HEADER_LINE_BYTES_MAX {
        return Check::Invalid(Invalid::new(431, "header line too long"));
    }
    Check::Incomplete
}

/// Parses a head that [`check`] called complete (`head` is `&buf[..len]`). Checks everything
/// again, so it is also safe on any other bytes.
pub fn parse(head: &[u8]) -> Result<Request<'_>, Invalid> {
    if head.len() > HEAD_BYTES_MAX {
        return Err(Invalid::new(431, "request head too large"));
    }
    let mut lines = head.split(|&b| b == b'\n').map(strip_cr);
    let first = lines.next().unwrap_or_default();
    let (method, target, minor_version) = request_line(first)?;
    let mut headers = Vec::new();
    for line in lines {
        if line.is_empty() {
            break;
        }
        if headers.len() >= HEADERS_MAX {
            return Err(Invalid::new(431, "too many header lines"));
        }
        if line.len() > HEADER_LINE_BYTES_MAX {
            return Err(Invalid::new(431, "header line too long"));
        }
        headers.push(header_line(line)?);
    }
    let path = target.split('?').next().unwrap_or(target);
    Ok(Request {
        method,
        target,
        path,
        minor_version,
        headers,
    })
}

impl<'a> Request<'a> {
    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, v)| v)
    }

    /// Whether any `name` header lists `token` among its comma-separated values, ignoring case
    /// (`Connection: keep-alive, Upgrade` has `upgrade`).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(|&b| b == b','))
            .any(|t| trim(t).eq_ignore_ascii_case(token.as_bytes()))
    }

    /// Whether the connection stays open after the response: HTTP/1.1 unless `Connection:
    /// close`, HTTP/1.0 only with `Connection: keep-alive`.
    pub fn keep_alive(&self) -> bool {
        if self.minor_version >= 1 {
            !self.header_has_token("connection", "close")
        } else {
            self.header_has_token("connection", "keep-alive")
        }
    }

    /// Whether the request announces a body (which this server never reads).
    pub fn has_body(&self) -> bool {
        let length_nonzero = self
            .header("content-length")
            .is_some_and(|v| v.iter().any(|&b| b != b'0'));
        length_nonzero || self.header("transfer-encoding").is_some()
    }
}

/// Maps a request to an endpoint: 404 for an unknown path, 405 for a method other than `GET` on
/// a known one, 400 for a `GET` with a body.
pub fn route(req: &Request<'_>) -> Result<Route, Invalid> {
    let route = match req.path {
        "/" | "/index.html" => Route::Page,
        "/ws" => Route::WebSocket,
        "/metrics" => Route::Metrics,
        "/health" => Route::Health,
        _ => return Err(Invalid::new(404, "no such page")),
    };
    if req.method != "GET" {
        return Err(Invalid::new(405, "only GET is served here"));
    }
    if req.has_body() {
        return Err(Invalid::new(400, "a GET request has no body"));
    }
    Ok(route)
}

/// `METHOD SP target SP HTTP/1.x`, exactly single spaces.
fn request_line(line: &[u8]) -> Result<(&str, &str, u8), Invalid> {
    const MALFORMED: Invalid = Invalid::new(400, "malformed request line");
    if line.len() > REQUEST_LINE_BYTES_MAX {
        return Err(Invalid::new(414, "request line too long"));
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(MALFORMED);
    };
    let method_ok = !method.is_empty() && method.len() <= METHOD_BYTES_MAX;
    if !method_ok || !method.iter().all(|&b| is_tchar(b)) {
        return Err(MALFORMED);
    }
    let target_ok = target.first() == Some(&b'/') && target.iter().all(|&b| b > 0x20 && b < 0x7f);
    if !target_ok {
        return Err(MALFORMED);
    }
    let minor = version_minor(version)?;
    // Both are ASCII by the checks above.
    let method = std::str::from_utf8(method).map_err(|_| MALFORMED)?;
    let target = std::str::from_utf8(target).map_err(|_| MALFORMED)?;
    Ok((method, target, minor))
}

/// `HTTP/1.0` or `HTTP/1.1`; another `HTTP/d.d` is 505, anything else 400.
fn version_minor(version: &[u8]) -> Result<u8, Invalid> {
    match version {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(Invalid::new(505, "only HTTP/1.0 and HTTP/1.1 are served"))
        }
        _ => Err(Invalid::new(400, "malformed HTTP version")),
    }
}

/// `name: value` with a token name, no blank before the colon, no control bytes in the value.
fn header_line(line: &[u8]) -> Result<(&str, &[u8]), Invalid> {
    const MALFORMED: Invalid = Invalid::new(400, "malformed header line");
    let colon = line.iter().position(|&b| b == b':').ok_or(MALFORMED)?;
    let (name, value) = (&line[..colon], &line[colon + 1..]);
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(MALFORMED);
    }
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f) {
        return Err(MALFORMED);
    }
    let name = std::str::from_utf8(name).map_err(|_| MALFORMED)?;
    Ok((name, trim(value)))
}

/// RFC 9110 `tchar`: the bytes of a method or a header name.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn strip_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_blank = |b: &u8| *b == b' ' || *b == b'\t';
    let start = bytes
        .iter()
        .position(|b| !is_blank(b))
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !is_blank(b))
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The reason phrase of the statuses this server sends.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        414 => "URI Too Long",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// Appends a whole response: status line, `Content-Type`, `Content-Length`, `Connection`, the
/// `extra` headers, a blank line and `body`.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) {
    let connection = if keep_alive { "keep-alive" } else { "close" };
    let head = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: {connection}\r\n",
        reason_phrase(status),
        body.len(),
    );
    out.extend_from_slice(head.as_bytes());
    for (name, value) in extra {
        out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Appends the response to a refused request: a plain-text body with the reason, `Connection:
/// close` (the server closes after sending it) and `Allow: GET` on a 405.
pub fn write_error(out: &mut Vec<u8>, invalid: Invalid) {
    let body = format!("{} {}\n", invalid.status, invalid.reason);
    let extra: &[(&str, &str)] = match invalid.status {
        405 => &[("Allow", "GET")],
        // RFC 6455 §4.4: the versions this server speaks.
        426 => &[("Sec-WebSocket-Version", "13")],
        _ => &[],
    };
    let content_type = "text/plain; charset=utf-8";
    write_response(
        out,
        invalid.status,
        content_type,
        extra,
        body.as_bytes(),
        false,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const GET: &[u8] = b"GET /ws?x=1 HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade:  websocket \r\n\r\n";

    #[test]
    fn upgrade_required_names_the_websocket_version() {
        let mut out = Vec::new();
        write_error(&mut out, Invalid::new(426, "upgrade required"));
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.starts_with("HTTP/1.1 426 Upgrade Required\r\n"),
            "{text}"
        );
        assert!(text.contains("\r\nSec-WebSocket-Version: 13\r\n"), "{text}");
    }

    fn invalid(buf: &[u8]) -> u16 {
        match check(buf) {
            Check::Invalid(i) => i.status,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn complete_head_is_found_and_parsed() {
        let mut buf = GET.to_vec();
        buf.extend_from_slice(b"next request bytes");
        assert_eq!(check(&buf), Check::Complete(GET.len()));
        let req = parse(&buf[..GET.len()]).unwrap();
        assert_eq!(req.method, "GET");
        assert_eq!(req.target, "/ws?x=1");
        assert_eq!(req.path, "/ws");
        assert_eq!(req.minor_version, 1);
        assert_eq!(req.header("HOST"), Some(&b"a"[..]));
        assert_eq!(req.header("upgrade"), Some(&b"websocket"[..]));
        assert!(req.header_has_token("connection", "upgrade"));
        assert!(!req.header_has_token("connection", "close"));
        assert!(req.keep_alive());
        assert_eq!(route(&req), Ok(Route::WebSocket));
    }

    #[test]
    fn every_prefix_of_a_head_is_incomplete() {
        for n in 0..GET.len() {
            assert_eq!(check(&GET[..n]), Check::Incomplete, "prefix {n}");
        }
    }

    #[test]
    fn bare_lf_line_ends_are_tolerated() {
        let head = b"GET / HTTP/1.0\nHost: a\n\n";
        assert_eq!(check(head), Check::Complete(head.len()));
        let req = parse(head).unwrap();
        assert_eq!(req.minor_version, 0);
        assert!(!req.keep_alive());
        assert_eq!(route(&req), Ok(Route::Page));
    }

    #[test]
    fn garbage_is_400_before_the_line_ends() {
        assert_eq!(invalid(b"\x16\x03\x01\x02\x00"), 400);
        assert_eq!(invalid(b"GE T / HTTP/1.1\r\n"), 400);
        assert_eq!(invalid(b"GET  / HTTP/1.1\r\n"), 400);
        assert_eq!(invalid(b"GET noslash HTTP/1.1\r\n"), 400);
        assert_eq!(invalid(b"GET / HTTP/1.1 extra\r\n"), 400);
        assert_eq!(invalid(b"GET / FTP/1.1\r\n"), 400);
        assert_eq!(invalid(b"\r\n"), 400);
    }

    #[test]
    fn other_versions_are_505() {
        assert_eq!(invalid(b"GET / HTTP/2.0\r\n"), 505);
        assert_eq!(invalid(b"GET / HTTP/1.2\r\n\r\n"), 505);
    }

    #[test]
    fn malformed_headers_are_400() {
        assert_eq!(invalid(b"GET / HTTP/1.1\r\nNo colon\r\n\r\n"), 400);
        assert_eq!(invalid(b"GET / HTTP/1.1\r\nBad name: x\r\n\r\n"), 400);
        assert_eq!(invalid(b"GET / HTTP/1.1\r\n: x\r\n\r\n"), 400);
        assert_eq!(invalid(b"GET / HTTP/1.1\r\n folded\r\n\r\n"), 400);
        assert_eq!(invalid(b"GET / HTTP/1.1\r\nA: b\x01c\r\n\r\n"), 400);
    }

    #[test]
    fn limits_are_enforced() {
        let long_target = format!("GET /{} HTTP/1.1", "a".repeat(REQUEST_LINE_BYTES_MAX));
        assert_eq!(invalid(long_target.as_bytes()), 414);
        let long_header = format!("GET / HTTP/1.1\r\nX: {}", "v".repeat(HEADER_LINE_BYTES_MAX));
        assert_eq!(invalid(long_header.as_bytes()), 431);
        let mut many = String::from("GET / HTTP/1.1\r\n");
        for i in 0..=HEADERS_MAX {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(invalid(many.as_bytes()), 431);
        let mut huge = String::from("GET / HTTP/1.1\r\n");
        while huge.len() < HEAD_BYTES_MAX {
            huge.push_str("X-Filler: 0123456789012345678901234567890123456789\r\n");
        }
        assert_eq!(invalid(huge.as_bytes()), 431);
    }

    #[test]
    fn routes_and_methods() {
        let status = |head: &[u8]| match parse(head).map(|r| route(&r)) {
            Ok(Ok(route)) => Ok(route),
            Ok(Err(i)) | Err(i) => Err(i.status),
        };
        assert_eq!(status(b"GET /metrics HTTP/1.1\r\n\r\n"), Ok(Route::Metrics));
        assert_eq!(status(b"GET /health HTTP/1.1\r\n\r\n"), Ok(Route::Health));
        assert_eq!(status(b"GET /nope HTTP/1.1\r\n\r\n"), Err(404));
        assert_eq!(status(b"POST /metrics HTTP/1.1\r\n\r\n"), Err(405));
        assert_eq!(status(b"POST /nope HTTP/1.1\r\n\r\n"), Err(404));
        let with_body = b"GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        assert_eq!(status(with_body), Err(400));
        let empty_body = b"GET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(status(empty_body), Ok(Route::Page));
    }

    #[test]
    fn responses_are_well_formed() {
        let mut out = Vec::new();
        write_response(
            &mut out,
            200,
            "text/plain",
            &[("Cache-Control", "no-store")],
            b"hi",
            true,
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: keep-alive\r\nCache-Control: no-store\r\n\r\nhi"
        );
        let mut out = Vec::new();
        write_error(&mut out, Invalid::new(405, "only GET"));
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert!(text.contains("\r\nAllow: GET\r\n"));
        assert!(text.contains("\r\nConnection: close\r\n"));
        assert!(text.ends_with("\r\n\r\n405 only GET\n"));
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let len = (xorshift(&mut seed) % 300) as usize;
            let alphabet = b"GET /HTP1.\r\n: abcx\x00\xff";
            let buf: Vec<u8> = (0..len)
                .map(|_| alphabet[(xorshift(&mut seed) % alphabet.len() as u64) as usize])
                .collect();
            if let Check::Complete(n) = check(&buf) {
                let req = parse(&buf[..n]).expect("check and parse agree");
                let _ = route(&req);
            }
            let _ = parse(&buf);
        }
    }

    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }
}
