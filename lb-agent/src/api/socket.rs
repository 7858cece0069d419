//! The Unix socket `lbctl` talks to, and the client it uses.
//!
//! The socket is created with mode 0600 (owned by the agent's user, root), so only root
//! can query the agent; a directory the agent creates for it gets mode 0700. It is bound
//! under a temporary name, restricted, then renamed into place, so it is never reachable
//! with looser permissions. A socket left by a stopped agent is replaced; one a running
//! agent still answers on is not.

use std::{
    fs::{self, DirBuilder, Permissions},
    io::{self, BufRead as _, BufReader, Write as _},
    net::SocketAddrV4,
    os::unix::{
        fs::{DirBuilderExt as _, FileTypeExt as _, MetadataExt as _, PermissionsExt as _},
        net::{UnixListener as StdListener, UnixStream as StdStream},
    },
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader as AsyncReader},
    net::{UnixListener, UnixStream},
};

use super::{
    ApiError, accept_failed,
    protocol::{self, Request, Response},
};
use crate::{
    model::Protocol,
    status::{AgentStatus, Explanation, FlowList, MemberStatus, StatusProvider},
};

/// Where the agent listens unless configured otherwise.
pub const DEFAULT_PATH: &str = "/run/xdplb/agent.sock";

/// Longest request line accepted; a longer one is answered with an error and the
/// connection closed.
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;

/// A bound API socket. Dropping it removes the socket file (if it is still this one).
#[derive(Debug)]
pub struct SocketServer {
    listener: UnixListener,
    path: PathBuf,
    /// `(device, inode)` of the socket file, to remove only our own.
    identity: (u64, u64),
}

fn socket_error(path: &Path) -> impl FnOnce(io::Error) -> ApiError + '_ {
    move |source| ApiError::Socket {
        path: path.to_owned(),
        source,
    }
}

/// Creates the socket's directory (mode 0700) if it does not exist; an existing one is
/// left as it is.
fn prepare_directory(path: &Path) -> Result<(), ApiError> {
    let Some(directory) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    else {
        return Ok(());
    };
    if directory.is_dir() {
        return Ok(());
    }
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(directory)
        .map_err(socket_error(directory))
}

/// Refuses a socket path no agent could bind: an existing file that is not a socket, or
/// one below a file where its directory would have to be. A running agent's socket is
/// fine: the next agent takes its place.
pub fn check_path(path: &Path) -> Result<(), ApiError> {
    if fs::symlink_metadata(path).is_ok_and(|metadata| !metadata.file_type().is_socket()) {
        return Err(ApiError::NotASocket {
            path: path.to_owned(),
        });
    }
    let blocking = path
        .ancestors()
        .skip(1)
        .find(|ancestor| ancestor.exists())
        .filter(|ancestor| !ancestor.is_dir());
    match blocking {
        Some(file) => Err(socket_error(path)(io::Error::new(
            io::ErrorKind::NotADirectory,
            format!("{} is not a directory", file.display()),
        ))),
        None => Ok(()),
    }
}

/// Refuses a path that is not a socket or that a running agent answers on.
fn check_previous(path: &Path) -> Result<(), ApiError> {
    match fs::symlink_metadata(path) {
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(socket_error(path)(error)),
        Ok(metadata) if !metadata.file_type().is_socket() => Err(ApiError::NotASocket {
            path: path.to_owned(),
        }),
        Ok(_) => match StdStream::connect(path) {
            Ok(_) => Err(ApiError::InUse {
                path: path.to_owned(),
            }),
            // Nobody listens: a stopped agent's socket, replaced by the rename.
            Err(_) => Ok(()),
        },
    }
}

/// Binds `temporary`, restricts it to 0600 and renames it to `path`.
fn bind_restricted(temporary: &Path, path: &Path) -> Result<StdListener, ApiError> {
    let listener = StdListener::bind(temporary).map_err(socket_error(temporary))?;
    fs::set_permissions(temporary, Permissions::from_mode(0o600))
        .map_err(socket_error(temporary))?;
    fs::rename(temporary, path).map_err(socket_error(path))?;
    Ok(listener)
}

impl SocketServer {
    /// Binds the API socket at `path`. Call it inside a tokio runtime.
    pub fn bind(path: &Path) -> Result<Self, ApiError> {
        prepare_directory(path)?;
        check_previous(path)?;
        let name = path.file_name().map_or_else(
            || "agent.sock".into(),
            |name| name.to_string_lossy().into_owned(),
        );
        let temporary = path.with_file_name(format!(".{name}.{}", std::process::id()));
        // A leftover from a crash between bind and rename.
        let _ = fs::remove_file(&temporary);
        let listener = bind_restricted(&temporary, path).inspect_err(|_| {
            let _ = fs::remove_file(&temporary);
        })?;
        let metadata = fs::symlink_metadata(path).map_err(socket_error(path))?;
        listener.set_nonblocking(true).map_err(socket_error(path))?;
        let listener = UnixListener::from_std(listener).map_err(socket_error(path))?;
        Ok(Self {
            listener,
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }

    /// Answers connections until the task is dropped. Each connection gets its own task;
    /// a bad request gets an error response and never stops the server.
    pub async fn serve(self, provider: Arc<dyn StatusProvider>) {
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, Arc::clone(&provider)));
                }
                Err(error) => accept_failed("api socket", &error).await,
            }
        }
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Serves one connection: a response line per request line, until EOF.
async fn connection(stream: UnixStream, provider: Arc<dyn StatusProvider>) {
    let (read, mut write) = stream.into_split();
    let mut reader = AsyncReader::new(read);
    let mut line = Vec::new();
    loop {
        line.clear();
        let limit = (MAX_REQUEST_BYTES + 1) as u64;
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(%error, "api connection failed");
                return;
            }
        }
        let oversized = line.len() > MAX_REQUEST_BYTES;
        let response = if oversized {
            Response::error(format!(
                "request longer than {MAX_REQUEST_BYTES} bytes; closing the connection"
            ))
        } else {
            answer(&line, &provider).await
        };
        if let Err(error) = send(&mut write, &response).await {
            tracing::debug!(%error, "api connection failed");
            return;
        }
        if oversized {
            return;
        }
    }
}

async fn answer(line: &[u8], provider: &Arc<dyn StatusProvider>) -> Response {
    let request = match protocol::parse(line) {
        Ok(request) => request,
        Err(message) => return Response::error(message),
    };
    let provider = Arc::clone(provider);
    // Providers read BPF maps, which blocks.
    match tokio::task::spawn_blocking(move || protocol::handle(provider.as_ref(), request)).await {
        Ok(response) => response,
        Err(error) => {
            tracing::error!(%error, "answering an api request failed");
            Response::error("the agent failed to answer this request; see its log")
        }
    }
}

async fn send(
    write: &mut (impl tokio::io::AsyncWrite + Unpin),
    response: &Response,
) -> io::Result<()> {
    let mut text = serde_json::to_vec(response)?;
    text.push(b'\n');
    write.write_all(&text).await
}

/// Why `lbctl` got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the agent at {path}: {source}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("lost the connection to the agent: {0}")]
    Io(#[from] io::Error),
    #[error("the agent's answer is not understood ({0}); are lbctl and lb-agent the same version?")]
    Protocol(String),
    /// The agent answered with an error.
    #[error("{0}")]
    Agent(String),
}

/// A blocking connection to the agent's socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<StdStream>,
    writer: StdStream,
}

impl Client {
    /// Connects to `path`; every later read or write fails after `timeout`.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Self, ClientError> {
        let connect = |source| ClientError::Connect {
            path: path.to_owned(),
            source,
        };
        let stream = StdStream::connect(path).map_err(connect)?;
        stream.set_read_timeout(Some(timeout)).map_err(connect)?;
        stream.set_write_timeout(Some(timeout)).map_err(connect)?;
        let writer = stream.try_clone().map_err(connect)?;
        Ok(Self {
            reader: BufReader::new(stream),
            writer,
        })
    }

    /// Sends one request and reads its response; an error response becomes
    /// [`ClientError::Agent`].
    pub fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        let mut line = serde_json::to_vec(request)
            .map_err(|error| ClientError::Protocol(error.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer)? == 0 {
            return Err(ClientError::Io(io::ErrorKind::UnexpectedEof.into()));
        }
        match serde_json::from_str(&answer) {
            Ok(Response::Error(error)) => Err(ClientError::Agent(error.message)),
            Ok(response) => Ok(response),
            Err(error) => Err(ClientError::Protocol(error.to_string())),
        }
    }

    pub fn status(&mut self) -> Result<AgentStatus, ClientError> {
        match self.request(&Request::Status {})? {
            Response::Status(status) => Ok(status),
            other => Err(unexpected(&other)),
        }
    }

    pub fn members(&mut self) -> Result<Vec<MemberStatus>, ClientError> {
        match self.request(&Request::Members {})? {
            Response::Members(members) => Ok(members),
            other => Err(unexpected(&other)),
        }
    }

    pub fn flows(&mut self, limit: usize) -> Result<FlowList, ClientError> {
        match self.request(&Request::Flows { limit: Some(limit) })? {
            Response::Flows(flows) => Ok(flows),
            other => Err(unexpected(&other)),
        }
    }

    pub fn explain(
        &mut self,
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: Protocol,
    ) -> Result<Explanation, ClientError> {
        let request = Request::Explain {
            client,
            vip,
            protocol,
        };
        match self.request(&request)? {
            Response::Explanation(explanation) => Ok(explanation),
            other => Err(unexpected(&other)),
        }
    }
}

fn unexpected(response: &Response) -> ClientError {
    let kind = match response {
        Response::Status(_) => "status",
        Response::Members(_) => "members",
        Response::Flows(_) => "flows",
        Response::Explanation(_) => "explanation",
        Response::Error(_) => "error",
    };
    ClientError::Protocol(format!("got a {kind} response to another request"))
}
