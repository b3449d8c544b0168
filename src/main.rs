//! The `tokend` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser as _;
use tokend::cli::{Cli, Command, KeysCommand};
use tokend::config::Config;
use tokend::token::keyring::file;

/// mimalloc instead of the system allocator: a refresh allocates and frees small
/// buffers on every request, which glibc's malloc spends a sixth of tokend's CPU on.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        None => serve(&cli.serve),
        Some(Command::Serve(args)) => serve(&args),
        Some(Command::Keys(cmd)) => keys(cmd),
        Some(Command::Healthcheck { listen }) => healthcheck(&listen),
    }
}

fn fail(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("tokend: {message}");
    ExitCode::from(2)
}

fn serve(args: &tokend::cli::ServeArgs) -> ExitCode {
    let config = match Config::from_args(args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    tokend::telemetry::init(&config);
    match tokend::serve::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn keys(cmd: KeysCommand) -> ExitCode {
    let result = match cmd {
        KeysCommand::Generate {
            out, if_missing, ..
        } if if_missing && out.exists() => file::list(&out).map(|keys| {
            let kids: Vec<String> = keys.into_iter().map(|(kid, _, _)| kid).collect();
            println!("kept {} with keys {}", out.display(), kids.join(", "));
        }),
        KeysCommand::Generate { out, force, .. } => file::generate(&out, force).map(|kid| {
            println!("wrote {} with signing key {kid}", out.display());
            println!("start tokend with TOKEND_KEYS={}", out.display());
        }),
        KeysCommand::Add { file: path } => file::add(&path).map(|kid| {
            println!(
                "added {kid} (published, not signing); promote it once every instance has reloaded"
            );
        }),
        KeysCommand::Promote { file: path, kid } => {
            file::promote(&path, &kid).map(|()| println!("{kid} now signs"))
        }
        KeysCommand::Remove { file: path, kid } => {
            file::remove(&path, &kid).map(|()| println!("removed {kid}"))
        }
        KeysCommand::List { file: path } => file::list(&path).map(|keys| {
            for (kid, created, signing) in keys {
                println!(
                    "{kid}\t{created}\t{}",
                    if signing { "signing" } else { "published" }
                );
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(e),
    }
}

fn healthcheck(listen: &str) -> ExitCode {
    use std::io::{Read as _, Write as _};
    let attempt = || -> std::io::Result<bool> {
        let mut addr: std::net::SocketAddr = listen
            .parse()
            .map_err(|_| std::io::Error::other("TOKEND_LISTEN is not an address"))?;
        // A container listens on 0.0.0.0 or [::]; its own check reaches it on loopback.
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        let timeout = std::time::Duration::from_secs(2);
        let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: tokend\r\nConnection: close\r\n\r\n")?;
        let mut head = [0u8; 12];
        stream.read_exact(&mut head)?;
        Ok(head.starts_with(b"HTTP/1.1 200"))
    };
    match attempt() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => fail("healthz did not answer 200"),
        Err(e) => fail(format!("healthz unreachable: {e}")),
    }
}
