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
        /// What connect must do: ok, refused or timeout.
        #[arg(long, default_value = "ok")]
        expect: String,
    },
    /// Connect a socket to its own address (a TCP simultaneous open).
    SelfConnect {
        #[arg(long)]
        addr: std::net::IpAddr,
    },
}

fn join_cgroup(path: &std::path::Path) -> Result<(), String> {
    let procs = path.join("cgroup.procs");
    std::fs::write(&procs, std::process::id().to_string())
        .map_err(|e| format!("cannot join cgroup {}: {e}", path.display()))
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

fn serve(
    listen: SocketAddr,
    dual_stack: bool,
    hopopts: bool,
    dstopts: bool,
    no_accept: bool,
) -> Result<(), String> {
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
    socket.bind(&listen.into()).map_err(|e| format!("bind {listen}: {e}"))?;
    socket.listen(4096).map_err(|e| format!("listen: {e}"))?;
    let port =
        socket.local_addr().ok().and_then(|a| a.as_socket()).map(|a| a.port()).ok_or("no local address")?;
    println!("ready {port}");
    std::io::stdout().flush().map_err(|e| e.to_string())?;
    // Stop when the test closes our stdin (or kills us).
    std::thread::spawn(|| {
        let mut line = String::new();
        while std::io::stdin().lock().read_line(&mut line).map(|n| n > 0).unwrap_or(false) {}
        std::process::exit(0);
    });
    if no_accept {
        loop {
            std::thread::park();
        }
    }
    loop {
        match socket.accept() {
            Ok((conn, _)) => drop(conn),
            Err(e) => return Err(format!("accept: {e}")),
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
}

fn connect(args: &ConnectArgs) -> Result<(), String> {
    let domain = if args.ipv6_socket { Domain::IPV6 } else { Domain::for_address(args.to) };
    let to: SockAddr = match (args.ipv6_socket, args.to) {
        (true, SocketAddr::V4(v4)) => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()).into(),
        (_, to) => to.into(),
    };
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..args.count {
        let socket =
            Socket::new(domain, Type::STREAM, Some(Protocol::TCP)).map_err(|e| format!("socket: {e}"))?;
        // Close with RST: no TIME_WAIT, so ports and 4-tuples are free at once.
        socket.set_linger(Some(Duration::ZERO)).map_err(|e| format!("SO_LINGER: {e}"))?;
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
                let local = socket.local_addr().ok().and_then(|a| a.as_socket()).ok_or("no local address")?;
                writeln!(out, "local {local}").map_err(|e| e.to_string())?;
                if !args.hold.is_zero() {
                    std::thread::sleep(args.hold);
                }
            }
            (Err(e), "refused") if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
            (Err(e), "timeout") if e.kind() == std::io::ErrorKind::TimedOut => {}
            (result, expected) => {
                return Err(format!("connect to {}: expected {expected}, got {result:?}", args.to));
            }
        }
    }
    out.flush().map_err(|e| e.to_string())
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = (|| {
        if let Some(cgroup) = &cli.cgroup {
            join_cgroup(cgroup)?;
        }
        if let Some(netns) = &cli.netns {
            enter_netns(netns)?;
        }
        match cli.command {
            Command::Serve { listen, dual_stack, hopopts, dstopts, no_accept } => {
                serve(listen, dual_stack, hopopts, dstopts, no_accept)
            }
            Command::Connect { to, count, bind, ipv6_socket, record_route, hold_ms, timeout_ms, expect } => {
                connect(&ConnectArgs {
                    to,
                    count,
                    bind,
                    ipv6_socket,
                    record_route,
                    hold: Duration::from_millis(hold_ms),
                    timeout: Duration::from_millis(timeout_ms),
                    expect,
                })
            }
            Command::SelfConnect { addr } => self_connect(addr),
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
