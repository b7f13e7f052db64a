//! The ceiling of our own HTTP stack: a minimal hyper 1 + tokio server that answers GET
//! and HEAD for a few fixed paths with files loaded into memory at start. The load
//! harness (`benches/load/run.sh`) measures it beside the origin and nginx, so the
//! origin's numbers can be read against the fastest this stack serves on the same machine.
//!
//! `ceiling --listen 127.0.0.1:0 --file ./metadata.json:/metadata.json --file ./p.tar.gz:/p.tar.gz`
//!
//! Without `--listen` (as when `cargo bench` runs every bench) it prints its usage and
//! exits successfully.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{Empty, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const USAGE: &str = "usage: ceiling --listen ADDR --file PATH:URLPATH [--file PATH:URLPATH ...]\n\
    Serves each file from memory at its URL path (GET and HEAD), with the content type \
    its URL path's extension implies (.json, .gz, else application/octet-stream).";

/// A file served from memory.
#[derive(Debug)]
struct Served {
    bytes: Bytes,
    content_type: HeaderValue,
}

type Files = HashMap<String, Served>;
type Body = BoxBody<Bytes, Infallible>;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (listen, files) = match parse_args(&args) {
        Ok(Some(parsed)) => parsed,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("ceiling: {message}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("ceiling: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(listen, files)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("ceiling: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `Ok(None)` when no `--listen` was given: print the usage and succeed.
fn parse_args(args: &[String]) -> Result<Option<(SocketAddr, Files)>, String> {
    let mut listen = None;
    let mut files = Files::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                let value = args.next().ok_or("--listen needs an address")?;
                let address = value
                    .parse()
                    .map_err(|error| format!("bad --listen address `{value}`: {error}"))?;
                listen = Some(address);
            }
            "--file" => {
                let value = args.next().ok_or("--file needs PATH:URLPATH")?;
                let (path, url_path) = value
                    .rsplit_once(':')
                    .filter(|(path, url_path)| !path.is_empty() && url_path.starts_with('/'))
                    .ok_or_else(|| format!("bad --file `{value}`: expected PATH:/URLPATH"))?;
                let bytes = std::fs::read(path)
                    .map_err(|error| format!("cannot read `{path}`: {error}"))?;
                let served = Served {
                    bytes: Bytes::from(bytes),
                    content_type: content_type(url_path),
                };
                files.insert(url_path.to_owned(), served);
            }
            // `cargo bench` passes `--bench`; anything else is ignored the same way
            // when there is nothing to serve.
            _ if listen.is_none() && files.is_empty() => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    match listen {
        None => Ok(None),
        Some(_) if files.is_empty() => Err("give at least one --file".to_owned()),
        Some(address) => Ok(Some((address, files))),
    }
}

fn content_type(url_path: &str) -> HeaderValue {
    if url_path.ends_with(".json") {
        HeaderValue::from_static("application/json")
    } else if url_path.ends_with(".gz") {
        HeaderValue::from_static("application/gzip")
    } else {
        HeaderValue::from_static("application/octet-stream")
    }
}

async fn serve(listen: SocketAddr, files: Files) -> std::io::Result<()> {
    let listener = TcpListener::bind(listen).await?;
    // The harness reads this line to learn the port when ADDR ends in `:0`.
    println!("ceiling listening on http://{}", listener.local_addr()?);
    let files = Arc::new(files);
    let http = http1::Builder::new();
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                eprintln!("ceiling: accept failed: {error}");
                continue;
            }
        };
        // As the origin does: small responses go out without waiting for Nagle.
        let _ = stream.set_nodelay(true);
        let files = Arc::clone(&files);
        let connection = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |request| answer(Arc::clone(&files), request)),
        );
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
}

async fn answer(
    files: Arc<Files>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let head = match *request.method() {
        Method::GET => false,
        Method::HEAD => true,
        _ => {
            let mut response = status(StatusCode::METHOD_NOT_ALLOWED);
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return Ok(response);
        }
    };
    let Some(served) = files.get(request.uri().path()) else {
        return Ok(status(StatusCode::NOT_FOUND));
    };
    let mut response = if head {
        Response::new(BoxBody::new(Empty::new()))
    } else {
        Response::new(BoxBody::new(Full::new(served.bytes.clone())))
    };
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, served.content_type.clone());
    headers.insert(CONTENT_LENGTH, HeaderValue::from(served.bytes.len()));
    Ok(response)
}

fn status(code: StatusCode) -> Response<Body> {
    let mut response = Response::new(BoxBody::new(Empty::new()));
    *response.status_mut() = code;
    response
}
