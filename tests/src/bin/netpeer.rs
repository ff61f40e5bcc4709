//! netpeer: the far end of the end-to-end tests. A process that first joins a
//! cgroup and a network namespace (in that order: a socket's cgroup is fixed
//! when it is created, and the namespace decides which interfaces it sees),
//! then serves or opens TCP connections and reports what it did on stdout.

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

#[derive(Debug, Parser)]
struct Cli {
    /// cgroup v2 directory to join before opening any socket.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// Network namespace (name under /run/netns) to enter after the cgroup.
    #[arg(long)]
    netns: Option<String>,
    /// Then run as this user (and group) id, with no supplementary groups.
    #[arg(long)]
    uid: Option<u32>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Listen, print `ready <port>`, accept and close connections until stdin closes.
    Serve {
        #[arg(long)]
        listen: SocketAddr,
        /// IPv6 listener that also accepts IPv4 (IPV6_V6ONLY off).
        #[arg(long)]
        dual_stack: bool,
        /// Put an IPv6 hop-by-hop options header on the listener's packets (its SYN-ACKs).
        #[arg(long)]
        hopopts: bool,
        /// Put an IPv6 destination options header on the listener's packets.
        #[arg(long)]
        dstopts: bool,
        /// Do not accept: leave connections in the backlog.
        #[arg(long)]
        no_accept: bool,
        /// Listen here, then fork this many workers that accept (a
        /// pre-fork server); this process accepts nothing.
        #[arg(long, default_value_t = 0)]
        prefork: u32,
        /// Accept TCP Fast Open (TCP_FASTOPEN on the listener).
        #[arg(long)]
        fastopen: bool,
        /// Read what the client sends (until it closes) before closing.
        #[arg(long)]
        read: bool,
    },
    /// Open connections one after the other; print `local <addr>` for each.
    Connect {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Local address to bind (port 0: any); the same for every connection.
        #[arg(long)]
        bind: Option<SocketAddr>,
        /// Use an IPv6 socket (a v4-mapped address in `--to` then means IPv4 on the wire).
        #[arg(long)]
        ipv6_socket: bool,
        /// Set the IPv4 Record Route option: the server's SYN-ACK echoes it.
        #[arg(long)]
        record_route: bool,
        /// Keep each connection open this long before closing it.
        #[arg(long, default_value_t = 0)]
        hold_ms: u64,
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// What connect must do: ok, refused, timeout or unreachable.
        #[arg(long, default_value = "ok")]
        expect: String,
        /// Send this many bytes after connecting (a small request).
        #[arg(long, default_value_t = 0)]
        send_bytes: usize,
        /// Connections per second at most (0: as fast as possible).
        #[arg(long, default_value_t = 0)]
        rate: u32,
        /// Keep going for this many seconds instead of `count` connections.
        #[arg(long)]
        seconds: Option<f64>,
        /// Print only the number of connections made, not each address.
        #[arg(long)]
        quiet: bool,
        /// SYN retransmissions before connect gives up (TCP_SYNCNT).
        #[arg(long)]
        syn_count: Option<u32>,
        /// Send the request in the SYN with TCP Fast Open (TCP_FASTOPEN_CONNECT).
        #[arg(long)]
        fastopen: bool,
        /// Close with FINs (the default closes with a RST: no TIME_WAIT).
        #[arg(long)]
        fin: bool,
    },
    /// One connection that exchanges exact amounts: connect, print `local
    /// <addr>` and `pid <pid>` at once, optionally wait for a line on stdin,
    /// send `send` bytes, then read `receive` bytes (or, with
    /// `--half-close`, shut down writing and read to the end), and close;
    /// prints `received <n>`.
    Exchange {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 0)]
        send: usize,
        #[arg(long, default_value_t = 0)]
        receive: usize,
        #[arg(long)]
        half_close: bool,
        /// Close with SO_LINGER 0 (a RST).
        #[arg(long)]
        linger0: bool,
        /// Wait for a line on stdin after connecting, and again before closing.
        #[arg(long)]
        wait_stdin: bool,
    },
    /// Accept connections one at a time; for each: read `receive` bytes
    /// (or, with `--until-eof`, to the end), send `send` bytes, read to the
    /// end, close. With `--unread`: wait for data and close without reading
    /// it (a RST). Prints `ready <port>`.
    ExchangeServe {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, default_value_t = 0)]
        receive: usize,
        #[arg(long, default_value_t = 0)]
        send: usize,
        #[arg(long)]
        until_eof: bool,
        #[arg(long)]
        unread: bool,
    },
    /// Create a TCP socket, pass it over SCM_RIGHTS to a forked child, which
    /// connects it; prints the child's `local <addr>` and `pid <pid>`.
    ScmConnect {
        #[arg(long)]
        to: SocketAddr,
    },
    /// Connect from a thread other than the leader, named `thread_name`;
    /// prints `local <addr>` and `pid <pid>`.
    ThreadConnect {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value = "connector")]
        thread_name: String,
    },
    /// Accept connections and read them to the end; prints `ready <port>`,
    /// and the bytes received when stdin closes.
    SinkTcp {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send as fast as possible over `streams` connections for `seconds`;
    /// prints the bytes sent.
    Blast {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 1)]
        streams: u32,
        #[arg(long)]
        seconds: f64,
    },
    /// Connect a socket to its own address (a TCP simultaneous open).
    SelfConnect {
        #[arg(long)]
        addr: std::net::IpAddr,
    },
    /// Ask a DNS server for a name; print `answer <ip>` for each address.
    Resolve {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        name: String,
        /// Ask for AAAA instead of A.
        #[arg(long)]
        aaaa: bool,
        /// Ask over TCP (otherwise UDP, then TCP if the answer is truncated).
        #[arg(long)]
        tcp: bool,
    },
    /// A small authoritative DNS server (UDP and TCP on one port). Prints
    /// `ready <port>` and serves until stdin closes.
    DnsServe {
        #[arg(long)]
        listen: SocketAddr,
        /// `name,A|AAAA|CNAME,value,ttl`; repeatable.
        #[arg(long)]
        record: Vec<String>,
        /// Over TCP, write the length prefix and the message in separate
        /// segments (a split length, then the message in two halves).
        #[arg(long)]
        split_tcp: bool,
    },
    /// Ask `rate` DNS questions per second for `seconds` over one UDP
    /// socket (names `n<i>.<domain>`, `names` distinct ones); prints the
    /// number of answers received.
    DnsLoad {
        #[arg(long)]
        server: SocketAddr,
        #[arg(long)]
        domain: String,
        #[arg(long, default_value_t = 1000)]
        names: u32,
        #[arg(long)]
        rate: u32,
        #[arg(long)]
        seconds: f64,
    },
    /// Bind a UDP socket and drop what arrives; prints `ready <port>`.
    UdpSink {
        #[arg(long)]
        bind: SocketAddr,
    },
    /// Send datagrams (hex) from `bind` to `to`.
    UdpSend {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        hex: Vec<String>,
    },
}

fn join_cgroup(path: &std::path::Path) -> Result<(), String> {
    let procs = path.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("cannot join cgroup {}: {e}", path.display()))
}

/// Drops to `uid` (and the group of the same number), with no
/// supplementary groups.
fn become_user(uid: u32) -> Result<(), String> {
    // SAFETY: setgroups/setgid/setuid take plain values and only change
    // this (single-threaded) process's credentials.
    let failed = unsafe {
        libc::setgroups(0, std::ptr::null()) != 0 || libc::setgid(uid) != 0 || libc::setuid(uid) != 0
    };
    if failed {
        return Err(format!("cannot become uid {uid}: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn enter_netns(name: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let path = format!("/run/netns/{name}");
    let file = std::fs::File::open(&path).map_err(|e| format!("cannot open {path}: {e}"))?;
    // SAFETY: file is an open network namespace file descriptor for the whole
    // call; setns only changes this (single-threaded) process's namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(format!("setns({path}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

fn set_raw_option(socket: &Socket, level: i32, name: i32, value: &[u8]) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: value points to value.len() readable bytes for the duration of
    // the call; the kernel copies them.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            value.as_ptr().cast(),
            value.len() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(format!("setsockopt({level}, {name}): {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// An IPv6 options header with one PadN option: next header and length are
/// filled in by the kernel; 8 bytes in all.
const IPV6_PADN_OPTIONS: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
/// IPv4 Record Route with room for one address (then padded with End).
const IPV4_RECORD_ROUTE: [u8; 8] = [7, 7, 4, 0, 0, 0, 0, 0];
const IPV6_HOPOPTS: i32 = 54;
const IPV6_DSTOPTS: i32 = 59;

/// TCP_FASTOPEN (listener queue length) and TCP_FASTOPEN_CONNECT.
const TCP_FASTOPEN: i32 = 23;
const TCP_FASTOPEN_CONNECT: i32 = 30;

struct ServeArgs {
    listen: SocketAddr,
    dual_stack: bool,
    hopopts: bool,
    dstopts: bool,
    no_accept: bool,
    prefork: u32,
    fastopen: bool,
    read: bool,
}

fn serve(args: &ServeArgs) -> Result<(), String> {
    let ServeArgs { listen, dual_stack, hopopts, dstopts, no_accept, prefork, fastopen, read } = *args;
    let socket = Socket::new(Domain::for_address(listen), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    socket.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    if listen.is_ipv6() {
        socket.set_only_v6(!dual_stack).map_err(|e| format!("IPV6_V6ONLY: {e}"))?;
    }
    if hopopts {
        set_raw_option(&socket, libc::IPPROTO_IPV6, IPV6_HOPOPTS, &IPV6_PADN_OPTIONS)?;
    }
    if dstopts {
        set_raw_option(&socket, libc::IPPROTO_IPV6, IPV6_DSTOPTS, &IPV6_PADN_OPTIONS)?;
    }
    if fastopen {
        set_raw_option(&socket, libc::IPPROTO_TCP, TCP_FASTOPEN, &64i32.to_ne_bytes())?;
    }
    socket.bind(&listen.into()).map_err(|e| format!("bind {listen}: {e}"))?;
    socket.listen(4096).map_err(|e| format!("listen: {e}"))?;
    let port =
        socket.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).ok_or("no local address")?;
    // Workers first (before any thread exists), each its own process.
    for _ in 0..prefork {
        // SAFETY: this process has one thread here; the child only runs
        // the accept loop below and exits with the parent.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(format!("fork: {}", std::io::Error::last_os_error()));
        }
        if pid == 0 {
            // SAFETY: prctl with PR_SET_PDEATHSIG has no memory-safety preconditions.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            accept_loop(&socket, read);
        }
    }
    println!("ready {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Stop when the test closes our stdin (or kills us).
    exit_when_stdin_closes();
    if no_accept || prefork > 0 {
        loop {
            std::thread::park();
        }
    }
    accept_loop(&socket, read)
}

/// Accepts and closes connections (after reading each to its end with
/// `read`) until the process ends.
fn accept_loop(socket: &Socket, read: bool) -> ! {
    loop {
        match socket.accept() {
            Ok((conn, _)) => {
                if read {
                    use std::io::Read as _;
                    let mut stream = std::net::TcpStream::from(conn);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink);
                }
            }
            Err(e) => {
                eprintln!("netpeer: accept: {e}");
                std::process::exit(1);
            }
        }
    }
}

struct ConnectArgs {
    to: SocketAddr,
    count: u32,
    bind: Option<SocketAddr>,
    ipv6_socket: bool,
    record_route: bool,
    hold: Duration,
    timeout: Duration,
    expect: String,
    send_bytes: usize,
    rate: u32,
    seconds: Option<f64>,
    quiet: bool,
    syn_count: Option<u32>,
    fastopen: bool,
    fin: bool,
}

fn connect(args: &ConnectArgs) -> Result<(), String> {
    let domain = if args.ipv6_socket { Domain::IPV6 } else { Domain::for_address(args.to) };
    let to: SockAddr = match (args.ipv6_socket, args.to) {
        (true, SocketAddr::V4(v4)) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()).into(),
        (_, to) => to.into(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let request = vec![b'x'; args.send_bytes];
    let started = std::time::Instant::now();
    let deadline = args.seconds.map(|s| started + Duration::from_secs_f64(s));
    let mut made = 0u64;
    let mut attempt = 0u64;
    loop {
        match deadline {
            Some(deadline) if std::time::Instant::now() >= deadline => break,
            None if attempt >= u64::from(args.count) => break,
            _ => {}
        }
        attempt += 1;
        if args.rate > 0 {
            // Pace: connection n starts at n / rate seconds.
            let due = started + Duration::from_secs_f64(attempt as f64 / f64::from(args.rate));
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
        }
        let socket =
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| format!("socket: {e}"))?;
        if !args.fin {
            // Close with RST: no TIME_WAIT, so ports and 4-tuples are free at once.
            socket.set_linger(Some(Duration::ZERO)).map_err(|e| format!("SO_LINGER: {e}"))?;
        }
        if let Some(count) = args.syn_count {
            set_raw_option(&socket, libc::IPPROTO_TCP, libc::TCP_SYNCNT, &(count as i32).to_ne_bytes())?;
        }
        if args.fastopen {
            set_raw_option(&socket, libc::IPPROTO_TCP, TCP_FASTOPEN_CONNECT, &1i32.to_ne_bytes())?;
        }
        if args.ipv6_socket {
            socket.set_only_v6(false).map_err(|e| format!("IPV6_V6ONLY: {e}"))?;
        }
        if args.record_route {
            set_raw_option(&socket, libc::IPPROTO_IP, libc::IP_OPTIONS, &IPV4_RECORD_ROUTE)?;
        }
        if let Some(bind) = args.bind {
            socket.set_reuse_address(true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
            socket.bind(&bind.into()).map_err(|e| format!("bind {bind}: {e}"))?;
        }
        match (socket.connect_timeout(&to, args.timeout), args.expect.as_str()) {
            (Ok(()), "ok") => {
                made += 1;
                if !request.is_empty() {
                    use std::io::Write as _;
                    (&socket).write_all(&request).map_err(|e| format!("send: {e}"))?;
                }
                if !args.quiet {
                    let local =
                        socket.local_addr().ok().and_then(|a| a.as_socket()).ok_or("no local address")?;
                    writeln!(out, "local {local}").map_err(|e| e.to_string())?;
                }
                if !args.hold.is_zero() {
                    std::thread::sleep(args.hold);
                }
            }
            (Err(e), "refused") if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            (Err(e), "timeout") if e.kind() == std::io::ErrorKind::TimedOut => {}
            (Err(e), "unreachable") if e.raw_os_error() == Some(libc::EHOSTUNREACH) => {}
            (result, expected) => {
                return Err(format!("connect to {}: expected {expected}, got {result:?}", args.to));
            }
        }
    }
    if args.quiet {
        writeln!(out, "connections {made}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn print_flush(lines: &[String]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    for line in lines {
        writeln!(out, "{line}").map_err(|e| e.to_string())?;
    }
    out.flush().map_err(|e| e.to_string())
}

fn wait_line() {
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
}

struct ExchangeArgs {
    to: SocketAddr,
    send: usize,
    receive: usize,
    half_close: bool,
    linger0: bool,
    wait_stdin: bool,
}

fn exchange(args: &ExchangeArgs) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let mut stream =
        std::net::TcpStream::connect(args.to).map_err(|e| format!("connect {}: {e}", args.to))?;
    let local = stream.local_addr().map_err(|e| e.to_string())?;
    print_flush(&[format!("local {local}"), format!("pid {}", std::process::id())])?;
    if args.wait_stdin {
        wait_line();
    }
    stream.write_all(&vec![b's'; args.send]).map_err(|e| format!("send: {e}"))?;
    let mut received = Vec::new();
    if args.half_close {
        stream.shutdown(std::net::Shutdown::Write).map_err(|e| format!("shutdown: {e}"))?;
        stream.read_to_end(&mut received).map_err(|e| format!("receive: {e}"))?;
    } else {
        received.resize(args.receive, 0);
        stream.read_exact(&mut received).map_err(|e| format!("receive: {e}"))?;
    }
    if args.wait_stdin {
        wait_line();
    }
    if args.linger0 {
        Socket::from(stream.try_clone().map_err(|e| e.to_string())?)
            .set_linger(Some(Duration::ZERO))
            .map_err(|e| format!("SO_LINGER: {e}"))?;
    }
    drop(stream);
    print_flush(&[format!("received {}", received.len())])
}

struct ExchangeServeArgs {
    listen: SocketAddr,
    receive: usize,
    send: usize,
    until_eof: bool,
    unread: bool,
}

fn exchange_serve(args: &ExchangeServeArgs) -> Result<(), String> {
    use std::io::{Read as _, Write as _};
    let listener =
        std::net::TcpListener::bind(args.listen).map_err(|e| format!("bind {}: {e}", args.listen))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    print_flush(&[format!("ready {port}")])?;
    exit_when_stdin_closes();
    for stream in listener.incoming() {
        let mut stream = stream.map_err(|e| format!("accept: {e}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        if args.unread {
            // Wait until data is there, then close without reading it.
            let mut byte = [0u8; 1];
            let _ = stream.peek(&mut byte);
            drop(stream);
            continue;
        }
        let mut rest = Vec::new();
        if args.until_eof {
            let _ = stream.read_to_end(&mut rest);
        } else {
            let mut request = vec![0u8; args.receive];
            if stream.read_exact(&mut request).is_err() {
                continue;
            }
        }
        if stream.write_all(&vec![b'r'; args.send]).is_err() {
            continue;
        }
        let _ = stream.read_to_end(&mut rest);
    }
    Ok(())
}

fn scm_connect(to: SocketAddr) -> Result<(), String> {
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::net::UnixDatagram;
    let (parent, child) = UnixDatagram::pair().map_err(|e| format!("socketpair: {e}"))?;
    // SAFETY: single-threaded here; the child connects, prints and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(format!("fork: {}", std::io::Error::last_os_error()));
    }
    if pid == 0 {
        drop(parent);
        let fd = receive_fd(&child).unwrap_or_else(|e| {
            eprintln!("netpeer: {e}");
            std::process::exit(1)
        });
        // SAFETY: the descriptor just arrived over SCM_RIGHTS and nothing else owns it.
        let socket = unsafe { Socket::from_raw_fd(fd) };
        let result = socket.connect(&to.into()).map_err(|e| format!("connect {to}: {e}")).and_then(|()| {
            let local = socket.local_addr().ok().and_then(|a| a.as_socket()).ok_or("no local address")?;
            print_flush(&[format!("local {local}"), format!("pid {}", std::process::id())])
        });
        std::process::exit(i32::from(result.is_err()));
    }
    drop(child);
    let socket = Socket::new(Domain::for_address(to), Type::STREAM, Some(Protocol::TCP))
        .map_err(|e| format!("socket: {e}"))?;
    send_fd(&parent, socket.as_raw_fd())?;
    drop(socket);
    let mut status = 0;
    // SAFETY: waits for our own child; status is a valid out-parameter.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        Ok(())
    } else {
        Err("the child that connected failed".to_owned())
    }
}

/// Sends one descriptor over a Unix socket (SCM_RIGHTS).
fn send_fd(socket: &std::os::unix::net::UnixDatagram, fd: i32) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg's control buffer has room for one header and one int
    // (CMSG_SPACE), so CMSG_FIRSTHDR is non-null and CMSG_DATA is inside it.
    unsafe {
        let header = libc::CMSG_FIRSTHDR(&msg);
        (*header).cmsg_level = libc::SOL_SOCKET;
        (*header).cmsg_type = libc::SCM_RIGHTS;
        (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(header).cast::<i32>(), fd);
    }
    // SAFETY: msg points to live buffers for the duration of the call.
    if unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, 0) } < 0 {
        return Err(format!("sendmsg: {}", std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Receives one descriptor sent by [`send_fd`].
fn receive_fd(socket: &std::os::unix::net::UnixDatagram) -> Result<i32, String> {
    use std::os::fd::AsRawFd;
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec { iov_base: byte.as_mut_ptr().cast(), iov_len: 1 };
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: msg points to live buffers for the duration of the call.
    if unsafe { libc::recvmsg(socket.as_raw_fd(), &mut msg, 0) } < 0 {
        return Err(format!("recvmsg: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: recvmsg filled msg; CMSG_FIRSTHDR checks the length it set.
    let header = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    if header.is_null() {
        return Err("no descriptor arrived".to_owned());
    }
    // SAFETY: a non-null header lies inside `control`, and an SCM_RIGHTS
    // message of one descriptor carries one int after it.
    Ok(unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(header).cast::<i32>()) })
}

fn thread_connect(to: SocketAddr, thread_name: &str) -> Result<(), String> {
    let worker = std::thread::Builder::new()
        .name(thread_name.to_owned())
        .spawn(move || -> Result<SocketAddr, String> {
            let stream = std::net::TcpStream::connect(to).map_err(|e| format!("connect {to}: {e}"))?;
            stream.local_addr().map_err(|e| e.to_string())
        })
        .map_err(|e| format!("thread: {e}"))?;
    let local = worker.join().map_err(|_| "the connecting thread panicked")??;
    print_flush(&[format!("local {local}"), format!("pid {}", std::process::id())])
}

fn sink_tcp(listen: SocketAddr) -> Result<(), String> {
    use std::io::Read as _;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = std::net::TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("ready {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    static RECEIVED: AtomicU64 = AtomicU64::new(0);
    std::thread::spawn(|| {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
        println!("received {}", RECEIVED.load(Ordering::Relaxed));
        std::process::exit(0);
    });
    for stream in listener.incoming() {
        let mut stream = stream.map_err(|e| format!("accept: {e}"))?;
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 256 * 1024];
            while let Ok(n) = stream.read(&mut buf) {
                if n == 0 {
                    break;
                }
                RECEIVED.fetch_add(n as u64, Ordering::Relaxed);
            }
        });
    }
    Ok(())
}

fn blast(to: SocketAddr, streams: u32, seconds: f64) -> Result<(), String> {
    use std::io::Write as _;
    let deadline = std::time::Instant::now() + Duration::from_secs_f64(seconds);
    let workers: Vec<_> = (0..streams)
        .map(|_| {
            std::thread::spawn(move || -> Result<u64, String> {
                let mut stream =
                    std::net::TcpStream::connect(to).map_err(|e| format!("connect {to}: {e}"))?;
                let buf = vec![0x5au8; 256 * 1024];
                let mut sent = 0u64;
                while std::time::Instant::now() < deadline {
                    stream.write_all(&buf).map_err(|e| format!("send: {e}"))?;
                    sent += buf.len() as u64;
                }
                Ok(sent)
            })
        })
        .collect();
    let mut total = 0;
    for worker in workers {
        total += worker.join().map_err(|_| "a sender panicked")??;
    }
    println!("sent {total}");
    Ok(())
}

fn self_connect(addr: std::net::IpAddr) -> Result<(), String> {
    let socket =
        Socket::new(Domain::for_address(SocketAddr::new(addr, 0)), Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket: {e}"))?;
    socket.set_linger(Some(Duration::ZERO)).map_err(|e| format!("SO_LINGER: {e}"))?;
    socket.bind(&SocketAddr::new(addr, 0).into()).map_err(|e| format!("bind: {e}"))?;
    let local = socket.local_addr().ok().and_then(|a| a.as_socket()).ok_or("no local address")?;
    socket.connect(&local.into()).map_err(|e| format!("connect to itself at {local}: {e}"))?;
    println!("local {local}");
    Ok(())
}

mod dns {
    //! The DNS modes: a resolver client and a small authoritative server.

    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
    use std::time::Duration;

    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::rdata::{A, AAAA, CNAME};
    use hickory_proto::rr::{Name, RData, Record, RecordType};

    /// A fully qualified name (questions on the wire always are), its
    /// labels taken as they are between the dots: any bytes, so that tests
    /// can ask for hostile names (`<img src=x>.evil.test`).
    fn name(text: &str) -> Result<Name, String> {
        let labels = text.trim_end_matches('.').split('.').map(str::as_bytes);
        Name::from_labels(labels).map_err(|e| format!("bad name {text}: {e}"))
    }

    pub fn resolve(server: SocketAddr, host: &str, aaaa: bool, tcp: bool) -> Result<(), String> {
        let record_type = if aaaa { RecordType::AAAA } else { RecordType::A };
        let mut query = Message::query();
        query.metadata.id = 0x5151;
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name(host)?, record_type));
        let bytes = query.to_vec().map_err(|e| e.to_string())?;
        let mut answer = if tcp { None } else { Some(over_udp(server, &bytes)?) };
        if answer.as_ref().is_none_or(|m: &Message| m.metadata.truncation) {
            answer = Some(over_tcp(server, &bytes)?);
        }
        let answer = answer.ok_or("no answer")?;
        for record in answer.answers.iter() {
            match &record.data {
                RData::A(a) => println!("answer {}", a.0),
                RData::AAAA(a) => println!("answer {}", a.0),
                _ => {}
            }
        }
        Ok(())
    }

    fn over_udp(server: SocketAddr, bytes: &[u8]) -> Result<Message, String> {
        let bind: SocketAddr =
            if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }.parse().map_err(|_| "addr")?;
        let socket = UdpSocket::bind(bind).map_err(|e| e.to_string())?;
        socket.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        socket.send_to(bytes, server).map_err(|e| format!("send to {server}: {e}"))?;
        let mut buf = vec![0u8; 65535];
        let n = socket.recv(&mut buf).map_err(|e| format!("no UDP answer from {server}: {e}"))?;
        Message::from_vec(&buf[..n]).map_err(|e| e.to_string())
    }

    fn over_tcp(server: SocketAddr, bytes: &[u8]) -> Result<Message, String> {
        let mut stream =
            TcpStream::connect_timeout(&server, Duration::from_secs(3)).map_err(|e| e.to_string())?;
        stream.set_read_timeout(Some(Duration::from_secs(3))).map_err(|e| e.to_string())?;
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(bytes);
        stream.write_all(&framed).map_err(|e| e.to_string())?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len).map_err(|e| format!("no TCP answer: {e}"))?;
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut message).map_err(|e| e.to_string())?;
        Message::from_vec(&message).map_err(|e| e.to_string())
    }

    pub struct Zone {
        records: Vec<Record>,
    }

    impl Zone {
        pub fn parse(specs: &[String]) -> Result<Zone, String> {
            let mut records = Vec::new();
            for spec in specs {
                let parts: Vec<&str> = spec.split(',').collect();
                let [owner, kind, value, ttl] = parts[..] else { return Err(format!("bad record {spec}")) };
                let ttl: u32 = ttl.parse().map_err(|_| format!("bad ttl in {spec}"))?;
                let data = match kind {
                    "A" => RData::A(A(value.parse().map_err(|_| format!("bad A in {spec}"))?)),
                    "AAAA" => RData::AAAA(AAAA(value.parse().map_err(|_| format!("bad AAAA in {spec}"))?)),
                    "CNAME" => RData::CNAME(CNAME(name(value)?)),
                    _ => return Err(format!("bad type in {spec}")),
                };
                records.push(Record::from_rdata(name(owner)?, ttl, data));
            }
            Ok(Zone { records })
        }

        /// The answer to `request`: the CNAME chain from the question, then
        /// the records of the asked type at its end.
        fn answer(&self, request: &[u8]) -> Option<Vec<u8>> {
            let request = Message::from_vec(request).ok()?;
            let query = request.queries.first()?.clone();
            let mut response = Message::response(request.metadata.id, OpCode::Query);
            response.metadata.message_type = MessageType::Response;
            response.metadata.authoritative = true;
            response.add_query(query.clone());
            let mut current = query.name().to_lowercase();
            for _ in 0..16 {
                let cname = self
                    .records
                    .iter()
                    .find(|r| r.name.to_lowercase() == current && r.record_type() == RecordType::CNAME);
                match cname {
                    Some(record) => {
                        response.add_answer(record.clone());
                        let RData::CNAME(target) = &record.data else { break };
                        current = target.0.to_lowercase();
                    }
                    None => break,
                }
            }
            let mut found = false;
            for record in &self.records {
                if record.name.to_lowercase() == current && record.record_type() == query.query_type() {
                    response.add_answer(record.clone());
                    found = true;
                }
            }
            if !found && response.answers.is_empty() {
                response.metadata.response_code = ResponseCode::NXDomain;
            }
            response.to_vec().ok()
        }
    }

    pub fn load(server: SocketAddr, domain: &str, names: u32, rate: u32, seconds: f64) -> Result<(), String> {
        use std::sync::atomic::{AtomicU64, Ordering};
        let socket = UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })
            .map_err(|e| format!("bind: {e}"))?;
        socket.connect(server).map_err(|e| format!("connect {server}: {e}"))?;
        socket.set_read_timeout(Some(Duration::from_millis(200))).map_err(|e| e.to_string())?;
        let receiver = socket.try_clone().map_err(|e| e.to_string())?;
        static ANSWERS: AtomicU64 = AtomicU64::new(0);
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = std::sync::Arc::clone(&done);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                if receiver.recv(&mut buf).is_ok() {
                    ANSWERS.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        let started = std::time::Instant::now();
        let total = (f64::from(rate) * seconds) as u64;
        for i in 0..total {
            let due = started + Duration::from_secs_f64(i as f64 / f64::from(rate.max(1)));
            if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                std::thread::sleep(wait);
            }
            let mut query = Message::query();
            query.metadata.id = i as u16;
            query.metadata.recursion_desired = true;
            query.add_query(Query::query(
                name(&format!("n{}.{domain}", i % u64::from(names.max(1))))?,
                RecordType::A,
            ));
            let bytes = query.to_vec().map_err(|e| e.to_string())?;
            // A full socket buffer drops a question; the answer count says so.
            let _ = socket.send(&bytes);
        }
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::Relaxed);
        let _ = reader.join();
        println!("questions {total}");
        println!("answers {}", ANSWERS.load(Ordering::Relaxed));
        Ok(())
    }

    pub fn serve(listen: SocketAddr, zone: Zone, split_tcp: bool) -> Result<(), String> {
        let udp = UdpSocket::bind(listen).map_err(|e| format!("bind udp {listen}: {e}"))?;
        let port = udp.local_addr().map_err(|e| e.to_string())?.port();
        let tcp =
            TcpListener::bind(SocketAddr::new(listen.ip(), port)).map_err(|e| format!("bind tcp: {e}"))?;
        let zone = std::sync::Arc::new(zone);
        let tcp_zone = std::sync::Arc::clone(&zone);
        std::thread::spawn(move || {
            for stream in tcp.incoming().flatten() {
                let _ = answer_tcp(stream, &tcp_zone, split_tcp);
            }
        });
        println!("ready {port}");
        std::io::stdout().flush().map_err(|e| e.to_string())?;
        super::exit_when_stdin_closes();
        let mut buf = vec![0u8; 65535];
        loop {
            let (n, from) = udp.recv_from(&mut buf).map_err(|e| e.to_string())?;
            if let Some(answer) = zone.answer(&buf[..n]) {
                let _ = udp.send_to(&answer, from);
            }
        }
    }

    fn answer_tcp(mut stream: TcpStream, zone: &Zone, split: bool) -> std::io::Result<()> {
        stream.set_nodelay(true)?;
        let mut len = [0u8; 2];
        stream.read_exact(&mut len)?;
        let mut request = vec![0u8; usize::from(u16::from_be_bytes(len))];
        stream.read_exact(&mut request)?;
        let Some(answer) = zone.answer(&request) else { return Ok(()) };
        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&answer);
        if split {
            // One byte of the length, then the rest of it with half the
            // message, then the other half: three segments.
            let half = 2 + answer.len() / 2;
            for piece in [&framed[..1], &framed[1..half], &framed[half..]] {
                stream.write_all(piece)?;
                stream.flush()?;
                std::thread::sleep(Duration::from_millis(40));
            }
        } else {
            stream.write_all(&framed)?;
        }
        // Let the client close first.
        let mut rest = Vec::new();
        let _ = stream.read_to_end(&mut rest);
        Ok(())
    }
}

/// Exits the process when the test closes our stdin.
fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
        std::process::exit(0);
    });
}

fn udp_sink(bind: SocketAddr) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    let port = socket.local_addr().map_err(|e| e.to_string())?.port();
    println!("ready {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    exit_when_stdin_closes();
    let mut buf = vec![0u8; 65535];
    loop {
        socket.recv(&mut buf).map_err(|e| e.to_string())?;
    }
}

fn udp_send(bind: SocketAddr, to: SocketAddr, hex: &[String]) -> Result<(), String> {
    let socket = std::net::UdpSocket::bind(bind).map_err(|e| format!("bind {bind}: {e}"))?;
    for datagram in hex {
        let bytes: Result<Vec<u8>, _> = (0..datagram.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(datagram.get(i..i + 2).unwrap_or("x"), 16))
            .collect();
        let bytes = bytes.map_err(|_| format!("bad hex {datagram}"))?;
        socket.send_to(&bytes, to).map_err(|e| format!("send to {to}: {e}"))?;
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = (|| {
        if let Some(cgroup) = &cli.cgroup {
            join_cgroup(cgroup)?;
        }
        if let Some(netns) = &cli.netns {
            enter_netns(netns)?;
        }
        if let Some(uid) = cli.uid {
            become_user(uid)?;
        }
        match cli.command {
            Command::Serve { listen, dual_stack, hopopts, dstopts, no_accept, prefork, fastopen, read } => {
                serve(&ServeArgs { listen, dual_stack, hopopts, dstopts, no_accept, prefork, fastopen, read })
            }
            Command::Exchange { to, send, receive, half_close, linger0, wait_stdin } => {
                exchange(&ExchangeArgs { to, send, receive, half_close, linger0, wait_stdin })
            }
            Command::ExchangeServe { listen, receive, send, until_eof, unread } => {
                exchange_serve(&ExchangeServeArgs { listen, receive, send, until_eof, unread })
            }
            Command::ScmConnect { to } => scm_connect(to),
            Command::ThreadConnect { to, thread_name } => thread_connect(to, &thread_name),
            Command::Connect {
                to,
                count,
                bind,
                ipv6_socket,
                record_route,
                hold_ms,
                timeout_ms,
                expect,
                send_bytes,
                rate,
                seconds,
                quiet,
                syn_count,
                fastopen,
                fin,
            } => connect(&ConnectArgs {
                to,
                count,
                bind,
                ipv6_socket,
                record_route,
                hold: Duration::from_millis(hold_ms),
                timeout: Duration::from_millis(timeout_ms),
                expect,
                send_bytes,
                rate,
                seconds,
                quiet,
                syn_count,
                fastopen,
                fin,
            }),
            Command::SinkTcp { listen } => sink_tcp(listen),
            Command::Blast { to, streams, seconds } => blast(to, streams, seconds),
            Command::SelfConnect { addr } => self_connect(addr),
            Command::Resolve { server, name, aaaa, tcp } => dns::resolve(server, &name, aaaa, tcp),
            Command::DnsServe { listen, record, split_tcp } => {
                dns::serve(listen, dns::Zone::parse(&record)?, split_tcp)
            }
            Command::DnsLoad { server, domain, names, rate, seconds } => {
                dns::load(server, &domain, names, rate, seconds)
            }
            Command::UdpSink { bind } => udp_sink(bind),
            Command::UdpSend { bind, to, hex } => udp_send(bind, to, &hex),
        }
    })();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("netpeer: {message}");
            ExitCode::FAILURE
        }
    }
}
