//! The control socket of a running `watch` (`/run/ipcaudit.sock`): `status` and `findings` ask
//! it for the live model. Mode 0600, and each peer's credentials are checked: root only.
//!
//! Protocol: the client sends one request line (`status`, `findings`, `report`, or `explain`
//! followed by a JSON target such as `{"type":"shm","id":123}`), the server answers with one JSON
//! document and closes. An answer `{"error": "..."}` is a refusal the client reports as is.

use std::{
    io,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use thiserror::Error;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
};

pub const DEFAULT_SOCKET: &str = "/run/ipcaudit.sock";

/// Requests a client may send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request {
    Status,
    Findings,
    /// One object's story and verdict.
    Explain(crate::model::Target),
    /// Every object's story, for `report --html`.
    Report,
}

impl Request {
    /// The request line (without the newline).
    pub fn line(self) -> String {
        match self {
            Self::Status => "status".to_owned(),
            Self::Findings => "findings".to_owned(),
            Self::Report => "report".to_owned(),
            Self::Explain(t) => format!(
                "explain {}",
                serde_json::to_string(&t).unwrap_or_else(|_| "{}".to_owned())
            ),
        }
    }

    pub fn parse(line: &str) -> Option<Self> {
        match line.trim() {
            "status" => Some(Self::Status),
            "findings" => Some(Self::Findings),
            "report" => Some(Self::Report),
            other => {
                let target = other.strip_prefix("explain ")?;
                serde_json::from_str(target).ok().map(Self::Explain)
            }
        }
    }
}

#[derive(Debug, Error)]
pub enum ControlError {
    #[error("cannot create the control socket {path}: {source}")]
    Bind { path: PathBuf, source: io::Error },
    #[error("another ipcaudit watch is already serving {0}")]
    InUse(PathBuf),
    #[error(
        "no ipcaudit watch is running (cannot connect to {path}: {source}); start one with `ipcaudit watch`"
    )]
    Connect { path: PathBuf, source: io::Error },
    #[error("control socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("the watch daemon answered with something that is not JSON: {0}")]
    BadAnswer(String),
    #[error("the watch daemon says: {0}")]
    Refused(String),
}

/// The listening side, owned by `watch`. The socket file is removed on drop.
pub struct Server {
    listener: UnixListener,
    path: PathBuf,
}

impl Server {
    /// Binds `path` with mode 0600. A stale socket (no one answering) is replaced; a live one is
    /// an error.
    pub async fn bind(path: &Path) -> Result<Self, ControlError> {
        if path.exists() {
            if UnixStream::connect(path).await.is_ok() {
                return Err(ControlError::InUse(path.to_path_buf()));
            }
            let _ = std::fs::remove_file(path);
        }
        let bind = |source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        };
        // Created under a restrictive umask, then chmod'ed, so it is never briefly open to others.
        // SAFETY: umask has no preconditions; restored right after.
        let old = unsafe { libc::umask(0o177) };
        let listener = UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener = listener.map_err(bind)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    /// Waits for a client. Cancel-safe (only the accept itself), so it can sit in a `select!`;
    /// hand the stream to [`read_request`] outside the select.
    pub async fn accept(&self) -> io::Result<UnixStream> {
        self.listener.accept().await.map(|(stream, _)| stream)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Checks the peer's credentials and reads its request line. Peers that are not root, or send
/// nothing valid within a second, are answered with an error and dropped (`Ok(None)`).
pub async fn read_request(mut stream: UnixStream) -> io::Result<Option<(Request, UnixStream)>> {
    let cred = stream.peer_cred()?;
    if cred.uid() != 0 {
        log::warn!(
            "control socket: refused peer uid {} pid {:?}",
            cred.uid(),
            cred.pid()
        );
        let _ = stream
            .write_all(b"{\"error\":\"permission denied: root only\"}\n")
            .await;
        return Ok(None);
    }
    let mut line = String::new();
    let read = async {
        let mut reader = BufReader::new((&mut stream).take(256));
        reader.read_line(&mut line).await
    };
    match tokio::time::timeout(Duration::from_secs(1), read).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => return Ok(None),
    }
    if let Some(request) = Request::parse(&line) {
        Ok(Some((request, stream)))
    } else {
        let _ = stream
            .write_all(
                b"{\"error\":\"unknown request: expected status, findings, report or explain\"}\n",
            )
            .await;
        Ok(None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Sends an answer and closes (bounded in time: a stuck client cannot stall the collector).
pub async fn answer(mut stream: UnixStream, body: &str) {
    let write = async {
        stream.write_all(body.as_bytes()).await?;
        stream.write_all(b"\n").await?;
        stream.shutdown().await
    };
    if let Err(e) = tokio::time::timeout(Duration::from_secs(2), write)
        .await
        .unwrap_or(Ok(()))
    {
        log::debug!("control socket: client went away: {e}");
    }
}

/// The client side: asks a running `watch`.
pub async fn ask(path: &Path, request: Request) -> Result<serde_json::Value, ControlError> {
    let io_err = |source| ControlError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.to_path_buf(),
            source,
        })?;
    stream
        .write_all(format!("{}\n", request.line()).as_bytes())
        .await
        .map_err(io_err)?;
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .map_err(|_| io_err(io::Error::new(io::ErrorKind::TimedOut, "no answer in 10 s")))?
        .map_err(io_err)?;
    let value: serde_json::Value = serde_json::from_str(&body)
        .map_err(|_| ControlError::BadAnswer(body.chars().take(200).collect()))?;
    if let Some(error) = value.get("error").and_then(serde_json::Value::as_str) {
        return Err(ControlError::Refused(error.to_owned()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(Request::parse("status\n"), Some(Request::Status));
        assert_eq!(Request::parse(" findings "), Some(Request::Findings));
        assert_eq!(Request::parse("rm -rf /"), None);
        let t = crate::model::Target {
            ty: Some(crate::event::IpcType::Shm),
            id: Some(123),
            ..crate::model::Target::default()
        };
        assert_eq!(
            Request::parse(&Request::Explain(t).line()),
            Some(Request::Explain(t))
        );
        assert_eq!(Request::parse("report\n"), Some(Request::Report));
        assert_eq!(Request::parse("explain {not json"), None);
        assert!(Request::Explain(t).line().len() < 256);
    }

    #[tokio::test(flavor = "current_thread")]
    async fn serves_one_request_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("ipcaudit-ctl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sock");
        let server = Server::bind(&path).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let client = tokio::spawn({
            let path = path.clone();
            async move { ask(&path, Request::Findings).await }
        });
        let accepted = read_request(server.accept().await.unwrap()).await.unwrap();
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let (request, stream) = accepted.unwrap();
            assert_eq!(request, Request::Findings);
            answer(stream, r#"{"findings":[]}"#).await;
            assert_eq!(
                client.await.unwrap().unwrap(),
                serde_json::json!({"findings": []})
            );
        } else {
            assert!(accepted.is_none(), "non-root peers are refused");
        }
        // A second watch must not steal a live socket (its probe connection is then refused).
        assert!(matches!(
            Server::bind(&path).await,
            Err(ControlError::InUse(_))
        ));
        drop(server);
        assert!(!path.exists());
        assert!(matches!(
            ask(&path, Request::Status).await,
            Err(ControlError::Connect { .. })
        ));
    }
}
