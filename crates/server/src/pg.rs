//! The PostgreSQL wire protocol of `cryptolake serve --pg`: BI tools, `psql` and database
//! drivers read the same read-only tables as `cryptolake sql`, under the same limits.
//!
//! The protocol itself is `pgwire`'s; Arrow results are encoded by `arrow-pg`, and the
//! `pg_catalog` tools discover tables through is `datafusion-pg-catalog`'s (all three through
//! `datafusion-postgres`). The handlers are ours, because theirs run any statement on one
//! shared session: here every statement is checked before it is planned and again as a plan,
//! runs under the query limits as its own task, and each client has a session of its own.

use std::collections::HashMap;
use std::fmt::Debug;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cryptolake_pipeline::query::QueryEngine;
use cryptolake_pipeline::query::postgres::{Kind, command_of};
use cryptolake_pipeline::settings::{PgPassword, PgTls, PgUser};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement as DfStatementWrapper;
use datafusion::sql::sqlparser::ast::{Set, Statement};
use datafusion_postgres::arrow_pg::datatypes::{
    arrow_schema_to_pg_fields, df::deserialize_parameters_with_server_types, encode_recordbatch,
    into_pg_type,
};
use datafusion_postgres::datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use datafusion_postgres::hooks::set_show::SetShowHook;
use datafusion_postgres::hooks::transactions::TransactionStatementHook;
use datafusion_postgres::hooks::{HookClient, QueryHook};
use datafusion_postgres::pgwire;
use futures::{Sink, stream};
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::sasl::scram::{ScramAuth, gen_salted_password};
use pgwire::api::auth::{
    AuthSource, DefaultServerParameterProvider, LoginInfo, Password, StartupHandler,
};
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ErrorHandler, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::types::format::FormatOptions;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::{Error, Result};

pub use cryptolake_pipeline::query::postgres::PG_VERSION;
const SCRAM_ITERATIONS: usize = 4096;
/// How long a client has, from connecting, to finish signing in.
pub const SIGN_IN_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients signing in at once. They do not count against `pg_max_connections`, which counts
/// signed-in clients only, so silent connections cannot lock users out.
const SIGNING_IN_AT_ONCE: usize = 64;
/// The most rows one Execute returns before the portal is suspended.
const MAX_FETCH_ROWS: i32 = 65_536;

/// How the wire protocol is served.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub addr: SocketAddr,
    pub max_connections: usize,
    pub users: Vec<PgUser>,
    pub tls: Option<PgTls>,
}

/// Loopback, or users who must sign in: anything else is refused, with why.
pub fn check_binding(addr: &SocketAddr, has_users: bool) -> Result<()> {
    if addr.ip().is_loopback() || has_users {
        return Ok(());
    }
    Err(Error::Refused(format!(
        "refusing to serve the PostgreSQL protocol on {addr} without a user: anyone who can reach it could read the lake. Add a [[server.pg_users]] (password hash from `cryptolake pg-password`) or set CRYPTOLAKE_SERVER_PG_USER and CRYPTOLAKE_SERVER_PG_PASSWORD, or bind 127.0.0.1"
    )))
}

/// A password hash for `[[server.pg_users]] password_hash`: SCRAM-SHA-256's salted password
/// with a random salt. The password cannot be read back from it.
pub fn hash_password(password: &str) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt: [u8; 16] = rand::random();
    let salted = gen_salted_password(password, &salt, SCRAM_ITERATIONS);
    format!(
        "{}{SCRAM_ITERATIONS}:{}${}",
        cryptolake_pipeline::settings::PG_HASH_PREFIX,
        b64.encode(salt),
        b64.encode(salted)
    )
}

/// The users' SCRAM secrets, by name.
#[derive(Debug)]
struct Users {
    known: HashMap<String, (Vec<u8>, Vec<u8>)>,
    /// A key of this process's own, from which an unknown user's salt is derived: the same
    /// user name gets the same salt on every attempt, as a known user's does, so two attempts
    /// do not tell whether a user exists.
    key: [u8; 32],
}

impl Users {
    fn new(users: &[PgUser]) -> Users {
        let known = users
            .iter()
            .map(|u| {
                let secret = match &u.password {
                    PgPassword::Scram { salt, salted, .. } => (salt.clone(), salted.clone()),
                    PgPassword::Plain(p) => {
                        let salt: [u8; 16] = rand::random();
                        let salted = gen_salted_password(p.expose(), &salt, SCRAM_ITERATIONS);
                        (salt.to_vec(), salted)
                    }
                };
                (u.name.clone(), secret)
            })
            .collect();
        Users {
            known,
            key: rand::random(),
        }
    }

    /// A value derived from the process key, `what` and `user`.
    fn derived(&self, what: &str, user: &str) -> Vec<u8> {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(self.key);
        h.update(what.as_bytes());
        h.update([0]);
        h.update(user.as_bytes());
        h.finalize().to_vec()
    }
}

#[async_trait]
impl AuthSource for Users {
    async fn get_password(&self, login: &LoginInfo) -> PgWireResult<Password> {
        let user = login.user().unwrap_or_default();
        match self.known.get(user) {
            Some((salt, salted)) => Ok(Password::new(Some(salt.clone()), salted.clone())),
            None => {
                // An unknown user gets the same exchange as a wrong password, ending in the
                // same error, with a salt that stays the same from one attempt to the next:
                // the answer does not tell which users exist.
                let salt = self.derived("salt", user)[..16].to_vec();
                Ok(Password::new(Some(salt), self.derived("salted", user)))
            }
        }
    }
}

/// Sign-in without a password, for loopback without users: the same server parameters,
/// backend key and cancel registration as a SCRAM sign-in.
struct Trust {
    cancels: Arc<pgwire::api::ConnectionManager>,
    keys: Arc<dyn pgwire::api::PidSecretKeyGenerator>,
}

impl Trust {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let PgWireFrontendMessage::Startup(startup) = message else {
            return Ok(());
        };
        pgwire::api::auth::protocol_negotiation(client, &startup).await?;
        pgwire::api::auth::save_startup_parameters_to_metadata(client, &startup);
        let (pid, key) = self.keys.generate(&*client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.cancels.register(pid, key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        pgwire::api::auth::finish_authentication(client, &server_parameters()).await
    }
}

/// The sign-in: trust on loopback without users, else SCRAM-SHA-256 (and SCRAM-SHA-256-PLUS,
/// bound to the TLS channel, when TLS is configured). With TLS configured, a client that did
/// not ask for it is refused before anything else; a SASL message is checked before pgwire
/// decodes it.
struct Startup {
    kind: StartupKind,
    require_tls: bool,
    /// Signed-in clients (`pg_max_connections`): a slot is taken just before the sign-in
    /// succeeds, so a client past the limit is told so instead of being let in.
    signed_in: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
    /// The client's nonce from its first SCRAM message, which the final one must extend.
    client_nonce: std::sync::Mutex<Option<String>>,
    /// The whole nonce of the exchange (the client's and the server's), as the server's first
    /// message gave it: the client's final message must carry exactly this.
    exchange_nonce: Arc<std::sync::Mutex<Option<String>>>,
}

enum StartupKind {
    Trust(Trust),
    Scram(Box<SASLAuthStartupHandler<DefaultServerParameterProvider>>),
}

fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".to_string(),
        code.to_string(),
        message.into(),
    )))
}

/// A SASLInitialResponse's mechanism and data, or why it is malformed.
fn sasl_initial(body: &[u8]) -> PgWireResult<(&str, &[u8])> {
    let bad = || fatal("08P01", "malformed SASL initial response");
    let nul = body.iter().position(|b| *b == 0).ok_or_else(bad)?;
    let mechanism = std::str::from_utf8(&body[..nul]).map_err(|_| bad())?;
    let rest = &body[nul + 1..];
    let len = rest.get(..4).ok_or_else(bad)?;
    let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    let data = &rest[4..];
    if len < 0 || len as usize != data.len() {
        return Err(bad());
    }
    Ok((mechanism, data))
}

/// The value of attribute `key` (`r`, `n`, …) in a SCRAM message.
fn scram_attr<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .split(',')
        .find_map(|a| a.strip_prefix(key)?.strip_prefix('='))
}

/// A client as the SCRAM handler sees it: everything passes through, and the nonce of the
/// server's first message (SASLContinue) is noted on its way.
struct Watched<'a, C> {
    inner: &'a mut C,
    nonce: Arc<std::sync::Mutex<Option<String>>>,
}

impl<C: Sink<PgWireBackendMessage> + Unpin> Sink<PgWireBackendMessage> for Watched<'_, C> {
    type Error = C::Error;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        std::pin::Pin::new(&mut *self.inner).poll_ready(cx)
    }

    fn start_send(
        mut self: std::pin::Pin<&mut Self>,
        item: PgWireBackendMessage,
    ) -> std::result::Result<(), Self::Error> {
        if let PgWireBackendMessage::Authentication(
            pgwire::messages::startup::Authentication::SASLContinue(data),
        ) = &item
        {
            let text = String::from_utf8_lossy(data);
            *self.nonce.lock().unwrap_or_else(|p| p.into_inner()) =
                scram_attr(&text, "r").map(str::to_string);
        }
        std::pin::Pin::new(&mut *self.inner).start_send(item)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        std::pin::Pin::new(&mut *self.inner).poll_flush(cx)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), Self::Error>> {
        std::pin::Pin::new(&mut *self.inner).poll_close(cx)
    }
}

impl<C: ClientInfo> ClientInfo for Watched<'_, C> {
    fn socket_addr(&self) -> SocketAddr {
        self.inner.socket_addr()
    }
    fn is_secure(&self) -> bool {
        self.inner.is_secure()
    }
    fn protocol_version(&self) -> pgwire::messages::ProtocolVersion {
        self.inner.protocol_version()
    }
    fn set_protocol_version(&mut self, version: pgwire::messages::ProtocolVersion) {
        self.inner.set_protocol_version(version)
    }
    fn pid_and_secret_key(&self) -> (i32, pgwire::messages::startup::SecretKey) {
        self.inner.pid_and_secret_key()
    }
    fn set_pid_and_secret_key(&mut self, pid: i32, key: pgwire::messages::startup::SecretKey) {
        self.inner.set_pid_and_secret_key(pid, key)
    }
    fn state(&self) -> pgwire::api::PgWireConnectionState {
        self.inner.state()
    }
    fn set_state(&mut self, state: pgwire::api::PgWireConnectionState) {
        self.inner.set_state(state)
    }
    fn transaction_status(&self) -> pgwire::messages::response::TransactionStatus {
        self.inner.transaction_status()
    }
    fn set_transaction_status(&mut self, status: pgwire::messages::response::TransactionStatus) {
        self.inner.set_transaction_status(status)
    }
    fn metadata(&self) -> &HashMap<String, String> {
        self.inner.metadata()
    }
    fn metadata_mut(&mut self) -> &mut HashMap<String, String> {
        self.inner.metadata_mut()
    }
    fn session_extensions(&self) -> &pgwire::api::SessionExtensions {
        self.inner.session_extensions()
    }
    fn sni_server_name(&self) -> Option<&str> {
        self.inner.sni_server_name()
    }
    fn client_certificates<'a>(
        &self,
    ) -> Option<&[tokio_rustls::rustls::pki_types::CertificateDer<'a>]> {
        self.inner.client_certificates()
    }
}

/// A signed-in client's slot, held as long as its connection.
struct SignedIn(#[allow(dead_code)] tokio::sync::OwnedSemaphorePermit);

impl Startup {
    /// Takes a signed-in slot for `client`, or refuses it (SQLSTATE 53300, as PostgreSQL).
    fn take_slot<C: ClientInfo + ?Sized>(&self, client: &C) -> PgWireResult<()> {
        let permit = self.signed_in.clone().try_acquire_owned().map_err(|_| {
            warn!(client = %client.socket_addr(), max = self.max_connections, "pg: too many clients");
            fatal(
                "53300",
                format!(
                    "sorry, too many clients already: this server takes {} at once (server.pg_max_connections)",
                    self.max_connections
                ),
            )
        })?;
        client.session_extensions().insert(SignedIn(permit));
        Ok(())
    }

    /// SCRAM's messages, checked before pgwire reads them: the first must be well formed and
    /// carry a nonce, the last must extend that nonce (RFC 5802: the server's is appended to the
    /// client's).
    fn check_scram(&self, body: &[u8]) -> PgWireResult<()> {
        let mut nonce = self.client_nonce.lock().unwrap_or_else(|p| p.into_inner());
        match nonce.as_deref() {
            None => {
                let (_, data) = sasl_initial(body)?;
                let text = std::str::from_utf8(data)
                    .map_err(|_| fatal("08P01", "SCRAM client-first message is not UTF-8"))?;
                let r = scram_attr(text, "r")
                    .filter(|r| !r.is_empty())
                    .ok_or_else(|| fatal("08P01", "SCRAM client-first message has no nonce"))?;
                *nonce = Some(r.to_string());
            }
            Some(client) => {
                let text = std::str::from_utf8(body).unwrap_or_default();
                let exchange = self
                    .exchange_nonce
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                let ok = scram_attr(text, "r").is_some_and(|r| {
                    r.len() > client.len()
                        && r.starts_with(client)
                        && exchange.as_deref().is_some_and(|e| e == r)
                });
                if !ok {
                    return Err(fatal(
                        "28P01",
                        "SCRAM client-final message does not carry the exchange's nonce",
                    ));
                }
            }
        }
        Ok(())
    }
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if let PgWireFrontendMessage::Startup(_) = &message
            && self.require_tls
            && !client.is_secure()
        {
            return Err(fatal(
                "28000",
                "this server takes connections over TLS only: connect with sslmode=require (or verify-full)",
            ));
        }
        match &self.kind {
            StartupKind::Trust(t) => {
                if let PgWireFrontendMessage::Startup(_) = &message {
                    self.take_slot(client)?;
                }
                t.on_startup(client, message).await
            }
            StartupKind::Scram(s) => {
                if let PgWireFrontendMessage::PasswordMessageFamily(
                    pgwire::messages::startup::PasswordMessageFamily::Raw(body),
                ) = &message
                {
                    let last = self
                        .client_nonce
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .is_some();
                    self.check_scram(body)?;
                    if last {
                        self.take_slot(client)?;
                    }
                }
                // The server's first message is read on its way out, for the nonce it gives.
                let mut watched = Watched {
                    inner: client,
                    nonce: self.exchange_nonce.clone(),
                };
                match s.on_startup(&mut watched, message).await {
                    // SCRAM's own user name is empty from libpq: name the one that signed in.
                    Err(PgWireError::InvalidPassword(_)) => Err(PgWireError::InvalidPassword(
                        client
                            .metadata()
                            .get(pgwire::api::METADATA_USER)
                            .cloned()
                            .unwrap_or_default(),
                    )),
                    other => other,
                }
            }
        }
    }
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C>(&self, client: &C, error: &mut PgWireError)
    where
        C: ClientInfo,
    {
        info!(client = %client.socket_addr(), error = %error, "pg: statement failed");
    }
}

struct Handlers {
    service: Arc<Service>,
    /// The users who sign in; none means trust (loopback only).
    users: Option<Arc<Users>>,
    /// The TLS certificate (PEM) when TLS is configured: connections must use it, and SCRAM
    /// is offered bound to it.
    cert_pem: Option<Vec<u8>>,
    /// Running statements by backend key, for cancel requests.
    cancels: Arc<pgwire::api::ConnectionManager>,
    /// One process id and secret key per connection, for all connections.
    keys: Arc<dyn pgwire::api::PidSecretKeyGenerator>,
    signed_in: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.service.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.service.clone()
    }

    /// One per connection: the SASL exchange keeps its state in the handler, so a shared one
    /// would mix the sign-ins of clients connecting at the same time.
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        let kind = match &self.users {
            None => StartupKind::Trust(Trust {
                cancels: self.cancels.clone(),
                keys: self.keys.clone(),
            }),
            Some(users) => {
                let mut scram = ScramAuth::new(users.clone());
                if let Some(pem) = &self.cert_pem
                    && let Err(e) = scram.configure_certificate(pem)
                {
                    warn!(error = %e, "pg: SCRAM-SHA-256-PLUS is not offered for this certificate's signature");
                }
                StartupKind::Scram(Box::new(
                    SASLAuthStartupHandler::new(Arc::new(server_parameters()))
                        .with_scram(scram)
                        .with_connection_manager(self.cancels.clone())
                        .with_pid_secret_key_generator(self.keys.clone()),
                ))
            }
        };
        Arc::new(Startup {
            kind,
            require_tls: self.cert_pem.is_some(),
            signed_in: self.signed_in.clone(),
            max_connections: self.max_connections,
            client_nonce: std::sync::Mutex::new(None),
            exchange_nonce: Arc::new(std::sync::Mutex::new(None)),
        })
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::new(pgwire::api::cancel::DefaultCancelHandler::new(
            self.cancels.clone(),
        ))
    }

    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
}

fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".to_string(),
        code.to_string(),
        message.into(),
    )))
}

fn query_error(e: cryptolake_pipeline::query::Error) -> PgWireError {
    user_error(e.sqlstate(), e.to_string())
}

fn df_error(e: datafusion::error::DataFusionError) -> PgWireError {
    query_error(cryptolake_pipeline::query::Error::from(e))
}

/// Sorts a statement with the SQL layer's rules; a refusal carries its SQLSTATE.
fn classify(statement: &Statement) -> PgWireResult<Kind> {
    cryptolake_pipeline::query::postgres::classify(statement)
        .map_err(|r| user_error(r.code, r.message))
}

/// Where a client's `SET TIME ZONE` and `statement_timeout` are kept in its metadata (the
/// names the set/show hooks use).
const TIMEZONE_KEY: &str = "timezone";
const TIMEOUT_KEY: &str = "statement_timeout_ms";

/// The client metadata `SET` writes, which `DISCARD ALL` and `RESET ALL` clear.
const SESSION_KEYS: [&str; 7] = [
    TIMEZONE_KEY,
    TIMEOUT_KEY,
    "datestyle",
    "bytea_output",
    "intervalstyle",
    "extra_float_digits",
    "search_path",
];

/// Each client's own session: its settings are its own.
struct ClientSession(SessionContext);

/// The statement of the extended protocol: its text, and the statement with its plan.
pub type PgStatement = (String, Option<(Statement, LogicalPlan)>);

/// What the handlers share: the engine, the parser and the session hooks.
struct Core {
    engine: QueryEngine,
    parser: PostgresCompatibilityParser,
    hooks: Vec<Arc<dyn QueryHook>>,
}

/// The simple and extended query handlers.
struct Service {
    core: Arc<Core>,
    parser: Arc<Parser>,
}

/// The extended protocol's parser.
struct Parser {
    core: Arc<Core>,
}

impl Core {
    fn session<C: ClientInfo + ?Sized>(&self, client: &C) -> SessionContext {
        client
            .session_extensions()
            .get_or_insert_with(|| ClientSession(self.new_session(client)))
            .0
            .clone()
    }

    fn reset_session<C: ClientInfo + ?Sized>(&self, client: &C) {
        client
            .session_extensions()
            .insert(ClientSession(self.new_session(client)));
    }

    /// A session of the client's own, in which `current_user` (and `session_user`, `user`,
    /// `current_role`) is the user it signed in as.
    fn new_session<C: ClientInfo + ?Sized>(&self, client: &C) -> SessionContext {
        use datafusion::logical_expr::{ColumnarValue, Volatility, create_udf};
        let session = self.engine.session();
        let user = client
            .metadata()
            .get(pgwire::api::METADATA_USER)
            .cloned()
            .unwrap_or_default();
        for name in ["session_user", "current_user", "user", "current_role"] {
            let value = datafusion::scalar::ScalarValue::Utf8(Some(user.clone()));
            session.register_udf(create_udf(
                name,
                vec![],
                DataType::Utf8,
                Volatility::Stable,
                Arc::new(move |_| Ok(ColumnarValue::Scalar(value.clone()))),
            ));
        }
        session
    }

    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        let mut statements = self
            .parser
            .parse(sql)
            .map_err(|e| user_error("42601", format!("syntax error: {e}")))?;
        for s in &mut statements {
            cryptolake_pipeline::query::postgres::rewrite(s);
        }
        Ok(statements)
    }

    /// The client's `statement_timeout`, when it set one.
    fn client_timeout<C: ClientInfo + ?Sized>(client: &C) -> Option<Duration> {
        client
            .metadata()
            .get(TIMEOUT_KEY)
            .and_then(|ms| ms.parse().ok())
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }

    async fn plan(
        &self,
        session: &SessionContext,
        statement: &Statement,
    ) -> PgWireResult<LogicalPlan> {
        let plan = session
            .state()
            .statement_to_plan(DfStatementWrapper::Statement(Box::new(statement.clone())))
            .await
            .map_err(df_error)?;
        QueryEngine::check_read_only(&plan).map_err(query_error)?;
        cryptolake_pipeline::query::postgres::backslash_escapes(plan).map_err(df_error)
    }

    async fn run<C: ClientInfo + ?Sized>(
        &self,
        client: &C,
        session: &SessionContext,
        plan: LogicalPlan,
        format: &Format,
    ) -> PgWireResult<Response> {
        let (schema, batches, held) = self
            .engine
            .execute(session, plan, None, Self::client_timeout(client))
            .await
            .map_err(query_error)?;
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let fields = Arc::new(arrow_schema_to_pg_fields(&schema, format, Some(options))?);
        let rows = {
            let fields = fields.clone();
            // The result stays counted against the memory limit until the client has read it
            // (or gone): the stream holds it.
            stream::iter(batches.into_iter().flat_map(move |b| {
                let _counted = &held;
                encode_recordbatch(fields.clone(), b)
            }))
        };
        Ok(Response::Query(QueryResponse::new(fields, rows)))
    }

    /// Answers `SET TIME ZONE` in the client's own session (the hooks would set it nowhere).
    async fn set_time_zone(
        &self,
        client: &mut dyn HookClient,
        statement: &Statement,
    ) -> Option<PgWireResult<Response>> {
        let Statement::Set(Set::SetTimeZone { value, .. }) = statement else {
            return None;
        };
        let tz = value.to_string().trim_matches(['\'', '"']).to_string();
        let session = self.session(&*client);
        session
            .state_ref()
            .write()
            .config_mut()
            .options_mut()
            .execution
            .time_zone = Some(tz.clone());
        client
            .metadata_mut()
            .insert(TIMEZONE_KEY.into(), tz.clone());
        let status = pgwire::messages::startup::ParameterStatus::new("TimeZone".into(), tz);
        if let Err(e) = client
            .send_message(PgWireBackendMessage::ParameterStatus(status))
            .await
        {
            return Some(Err(e));
        }
        Some(Ok(Response::Execution(Tag::new("SET"))))
    }

    /// `SET`, `SHOW` and transaction statements, in the client's session.
    async fn session_statement(
        &self,
        client: &mut dyn HookClient,
        statement: &Statement,
        plan_and_params: Option<(&LogicalPlan, &ParamValues)>,
    ) -> PgWireResult<Response> {
        if let Some(r) = self.set_time_zone(client, statement).await {
            return r;
        }
        let session = self.session(&*client);
        for hook in &self.hooks {
            let answer = match plan_and_params {
                None => hook.handle_simple_query(statement, &session, client).await,
                Some((plan, params)) => {
                    hook.handle_extended_query(statement, plan, params, &session, client)
                        .await
                }
            };
            if let Some(r) = answer {
                return r;
            }
        }
        Err(user_error(
            "0A000",
            format!("{} is not supported", command_of(statement)),
        ))
    }

    fn discard<C: ClientInfo + ?Sized>(&self, client: &mut C) -> Response {
        // Back to the session a new connection gets: settings made by SET are dropped.
        for key in SESSION_KEYS {
            client.metadata_mut().remove(key);
        }
        self.reset_session(client);
        Response::Execution(Tag::new("DISCARD ALL"))
    }

    fn reset<C: ClientInfo + ?Sized>(&self, client: &mut C, statement: &Statement) -> Response {
        use datafusion::sql::sqlparser::ast::Reset;
        if let Statement::Reset(r) = statement {
            match &r.reset {
                Reset::ALL => {
                    self.discard(client);
                }
                Reset::ConfigurationParameter(name) => {
                    let name = name.to_string().to_ascii_lowercase();
                    let key = match name.as_str() {
                        "statement_timeout" => TIMEOUT_KEY,
                        "timezone" | "time zone" => {
                            self.reset_session(client);
                            TIMEZONE_KEY
                        }
                        other => other,
                    };
                    client.metadata_mut().remove(key);
                }
            }
        }
        Response::Execution(Tag::new("RESET"))
    }
}

#[async_trait]
impl SimpleQueryHandler for Service {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let core = &self.core;
        let statements = core.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        // Every statement is checked before any runs: a refused one in a batch runs none.
        let kinds = statements
            .iter()
            .map(classify)
            .collect::<PgWireResult<Vec<Kind>>>()?;
        let mut out = Vec::with_capacity(statements.len());
        for (statement, kind) in statements.iter().zip(kinds) {
            let response = match kind {
                Kind::Session => core.session_statement(client, statement, None).await?,
                Kind::Discard => core.discard(client),
                Kind::Deallocate => Response::Execution(Tag::new("DEALLOCATE")),
                Kind::Reset => core.reset(client, statement),
                Kind::Savepoint(tag) => Response::Execution(Tag::new(tag)),
                Kind::Read => {
                    let session = core.session(client);
                    let plan = core.plan(&session, statement).await?;
                    core.run(client, &session, plan, &Format::UnifiedText)
                        .await?
                }
            };
            out.push(response);
        }
        Ok(out)
    }
}

/// The parameters' types as DataFusion infers them, by position (`$1` first), a cast of a
/// placeholder (`$1::date`) standing for its type where the plan leaves it open, and `None`
/// for a parameter the plan no longer holds (a rewrite dropped it). At least `at_least` long.
fn parameter_types(plan: &LogicalPlan, at_least: usize) -> PgWireResult<Vec<Option<DataType>>> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::prelude::Expr;
    let mut types = plan.get_parameter_types().map_err(df_error)?;
    if types.values().any(Option::is_none) {
        let _ = plan.apply(|node| {
            for expr in node.expressions() {
                let _ = expr.apply(|e| {
                    if let Expr::Cast(cast) = e
                        && let Expr::Placeholder(p) = cast.expr.as_ref()
                        && let Some(slot @ None) = types.get_mut(&p.id)
                    {
                        *slot = Some(cast.field.data_type().clone());
                    }
                    Ok(TreeNodeRecursion::Continue)
                });
            }
            Ok(TreeNodeRecursion::Continue)
        });
    }
    let by_position: Vec<(usize, Option<DataType>)> = types
        .into_iter()
        .filter_map(|(id, t)| Some((id.trim_start_matches('$').parse().ok()?, t)))
        .filter(|(i, _)| *i >= 1)
        .collect();
    let len = by_position
        .iter()
        .map(|(i, _)| *i)
        .max()
        .unwrap_or(0)
        .max(at_least);
    let mut out = vec![None; len];
    for (i, t) in by_position {
        out[i - 1] = t;
    }
    Ok(out)
}

fn wire_types(types: &[Option<DataType>]) -> PgWireResult<Vec<Type>> {
    types
        .iter()
        .map(|t| match t {
            Some(t) => into_pg_type(t),
            None => Ok(Type::UNKNOWN),
        })
        .collect()
}

/// An empty relation for the statements the extended protocol describes but does not plan.
fn no_rows() -> LogicalPlan {
    LogicalPlan::EmptyRelation(datafusion::logical_expr::EmptyRelation {
        produce_one_row: false,
        schema: Arc::new(datafusion::common::DFSchema::empty()),
    })
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Self::Statement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let core = &self.core;
        let mut statements = core.parse(sql)?;
        if statements.len() > 1 {
            return Err(user_error(
                "42601",
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        let Some(statement) = statements.pop() else {
            return Ok(None);
        };
        let plan = match classify(&statement)? {
            Kind::Read => {
                let session = core.session(client);
                core.plan(&session, &statement).await?
            }
            Kind::Session => {
                let session = core.session(client);
                let mut found = None;
                for hook in &core.hooks {
                    if let Some(p) = hook
                        .handle_extended_parse_query(&statement, &session, client)
                        .await
                    {
                        found = Some(p?);
                        break;
                    }
                }
                found.unwrap_or_else(no_rows)
            }
            Kind::Discard | Kind::Deallocate | Kind::Reset | Kind::Savepoint(_) => no_rows(),
        };
        Ok(Some((sql.to_string(), Some((statement, plan)))))
    }

    fn get_parameter_types(&self, stmt: &Self::Statement) -> PgWireResult<Vec<Type>> {
        match stmt {
            (_, Some((_, plan))) => wire_types(&parameter_types(plan, 0)?),
            _ => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        stmt: &Self::Statement,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match stmt {
            (_, Some((_, plan))) => arrow_schema_to_pg_fields(
                plan.schema().as_arrow(),
                column_format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            _ => Ok(Vec::new()),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for Service {
    type Statement = PgStatement;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Self::QueryParser> {
        self.parser.clone()
    }

    /// An Execute's row count is PostgreSQL's: zero or less is every row. pgwire reserves room
    /// for the count asked, so a huge or negative one is read as a bounded fetch (the client
    /// is told the portal is suspended and asks again).
    async fn on_execute<C>(
        &self,
        client: &mut C,
        mut message: pgwire::messages::extendedquery::Execute,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        message.max_rows = message.max_rows.clamp(0, MAX_FETCH_ROWS);
        self._on_execute(client, message).await
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Self::Statement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Self::Statement>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let core = &self.core;
        let (_, Some((statement, plan))) = &portal.statement.statement else {
            return Ok(Response::EmptyQuery);
        };
        let types = parameter_types(plan, portal.parameter_len())?;
        let wire = wire_types(&types)?;
        let type_refs: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
        let wire_refs: Vec<Option<&Type>> = wire.iter().map(Some).collect();
        let params = deserialize_parameters_with_server_types(portal, &type_refs, &wire_refs)?;
        // Parsing checked the statement; it is checked again here, as anything run is.
        match classify(statement)? {
            Kind::Session => {
                core.session_statement(client, statement, Some((plan, &params)))
                    .await
            }
            Kind::Discard => Ok(core.discard(client)),
            Kind::Deallocate => Ok(Response::Execution(Tag::new("DEALLOCATE"))),
            Kind::Reset => Ok(core.reset(client, statement)),
            Kind::Savepoint(tag) => Ok(Response::Execution(Tag::new(tag))),
            Kind::Read => {
                let plan = plan
                    .clone()
                    .replace_params_with_values(&params)
                    .map_err(df_error)?;
                let session = core.session(client);
                core.run(client, &session, plan, &portal.result_column_format)
                    .await
            }
        }
    }
}

/// The server parameters a client gets at sign-in.
fn server_parameters() -> DefaultServerParameterProvider {
    let mut p = DefaultServerParameterProvider::default();
    p.server_version = PG_VERSION.to_string();
    p.default_transaction_read_only = true;
    p.is_superuser = false;
    p.search_path = "crypto_analytics".to_string();
    p
}

/// Loads the TLS certificate and key; anything unusable is an error naming the file.
fn tls_acceptor(tls: &PgTls) -> Result<pgwire::tokio::TlsAcceptor> {
    use tokio_rustls::rustls;
    let refuse = |what: &str, path: &std::path::Path, why: String| {
        Error::Refused(format!(
            "cannot use the TLS {what} {}: {why}; the PostgreSQL protocol is not served without it",
            path.display()
        ))
    };
    let read = |what: &str, path: &std::path::Path| {
        std::fs::read(path).map_err(|e| refuse(what, path, e.to_string()))
    };
    let cert_pem = read("certificate", &tls.cert)?;
    let key_pem = read("key", &tls.key)?;
    let certs = rustls_pemfile::certs(&mut cert_pem.as_slice())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| refuse("certificate", &tls.cert, e.to_string()))?;
    if certs.is_empty() {
        return Err(refuse(
            "certificate",
            &tls.cert,
            "no PEM certificate in it".into(),
        ));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_slice())
        .map_err(|e| refuse("key", &tls.key, e.to_string()))?
        .ok_or_else(|| refuse("key", &tls.key, "no PEM private key in it".into()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| refuse("certificate", &tls.cert, e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| refuse("key", &tls.key, e.to_string()))?;
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// A bound wire-protocol listener, ready to serve.
pub struct PgServer {
    listener: TcpListener,
    handlers: Arc<Handlers>,
    tls: Option<pgwire::tokio::TlsAcceptor>,
    /// Clients signing in.
    signing_in: Arc<tokio::sync::Semaphore>,
    max_connections: usize,
}

impl PgServer {
    /// Checks the binding rule, loads TLS, installs the PostgreSQL catalog in `engine` and
    /// binds: every failure is reported before anything is served.
    pub async fn bind(engine: QueryEngine, options: &PgOptions) -> Result<PgServer> {
        check_binding(&options.addr, !options.users.is_empty())?;
        let tls = options.tls.as_ref().map(tls_acceptor).transpose()?;
        cryptolake_pipeline::query::postgres::install(engine.context())
            .map_err(|e| Error::Refused(format!("cannot set up pg_catalog: {e}")))?;
        let core = Arc::new(Core {
            engine,
            parser: PostgresCompatibilityParser::new(),
            hooks: vec![
                Arc::new(SetShowHook) as Arc<dyn QueryHook>,
                Arc::new(TransactionStatementHook),
            ],
        });
        let handlers = Arc::new(Handlers {
            service: Arc::new(Service {
                parser: Arc::new(Parser { core: core.clone() }),
                core,
            }),
            users: (!options.users.is_empty()).then(|| Arc::new(Users::new(&options.users))),
            cert_pem: match &options.tls {
                Some(t) => Some(std::fs::read(&t.cert).map_err(|e| {
                    Error::Refused(format!("cannot read {}: {e}", t.cert.display()))
                })?),
                None => None,
            },
            cancels: Arc::new(pgwire::api::ConnectionManager::new()),
            keys: Arc::new(pgwire::api::RandomPidSecretKeyGenerator::default()),
            signed_in: Arc::new(tokio::sync::Semaphore::new(options.max_connections)),
            max_connections: options.max_connections,
        });
        let listener = TcpListener::bind(options.addr)
            .await
            .map_err(|source| Error::Bind {
                addr: options.addr,
                source,
            })?;
        Ok(PgServer {
            listener,
            handlers,
            tls,
            signing_in: Arc::new(tokio::sync::Semaphore::new(SIGNING_IN_AT_ONCE)),
            max_connections: options.max_connections,
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr> {
        self.listener.local_addr().map_err(Error::Serve)
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Accepts clients until `down` turns true.
    pub async fn run(self, mut down: tokio::sync::watch::Receiver<bool>) -> Result<()> {
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = down.wait_for(|d| *d) => return Ok(()),
            };
            let (socket, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "pg: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = socket.set_nodelay(true);
            match self.signing_in.clone().try_acquire_owned() {
                Ok(permit) => {
                    let connection = Connection {
                        handlers: self.handlers.clone(),
                        peer,
                    };
                    tokio::spawn(connection.serve(socket, self.tls.clone(), permit));
                }
                Err(_) => {
                    warn!(client = %peer, "pg: too many clients signing in at once");
                    tokio::spawn(too_many_clients(socket, self.max_connections));
                }
            }
        }
    }
}

type Socket = tokio_util::codec::Framed<
    pgwire::tokio::server::MaybeTls,
    pgwire::tokio::server::PgWireMessageServerCodec<PgStatement>,
>;

/// One client's connection, served message by message (pgwire's own loop, with these rules):
/// - signing in must be done within [`SIGN_IN_TIMEOUT`] of connecting, or the connection is
///   closed; a client counts against `pg_max_connections` only once signed in;
/// - any error while signing in, and any FATAL error, ends the connection (nothing a client
///   sends after a failed sign-in is read);
/// - a message that cannot be decoded, or a panic while one is handled, ends the connection
///   with a protocol error, never the server.
struct Connection {
    handlers: Arc<Handlers>,
    peer: SocketAddr,
}

impl Connection {
    async fn serve(
        self,
        tcp: TcpStream,
        tls: Option<pgwire::tokio::TlsAcceptor>,
        signing_in: tokio::sync::OwnedSemaphorePermit,
    ) {
        use futures::{FutureExt, SinkExt, StreamExt};
        use pgwire::api::PgWireConnectionState as State;
        use std::panic::AssertUnwindSafe;
        let peer = self.peer;
        let deadline = tokio::time::sleep(SIGN_IN_TIMEOUT);
        tokio::pin!(deadline);
        let negotiated = tokio::select! {
            _ = &mut deadline => return,
            s = pgwire::tokio::server::negotiate_tls::<PgStatement>(tcp, tls) => s,
        };
        let Ok(Some(mut socket)) = negotiated else {
            return;
        };
        let h = &self.handlers;
        let (startup, simple, extended, copy, cancel, errors) = (
            h.startup_handler(),
            h.service.clone(),
            h.service.clone(),
            h.copy_handler(),
            h.cancel_handler(),
            h.error_handler(),
        );
        let mut signing_in = Some(signing_in);
        loop {
            let authenticating = matches!(
                socket.state(),
                State::AwaitingStartup | State::AuthenticationInProgress
            );
            let next = AssertUnwindSafe(socket.next()).catch_unwind();
            let received = match authenticating {
                true => tokio::select! {
                    _ = &mut deadline => {
                        info!(client = %peer, "pg: sign-in timed out");
                        return;
                    }
                    m = next => m,
                },
                false => next.await,
            };
            let message = match received {
                Ok(None) => return,
                Ok(Some(Ok(m))) => m,
                Ok(Some(Err(e))) => {
                    return end(&mut socket, fatal("08P01", format!("invalid message: {e}"))).await;
                }
                Err(_) => {
                    warn!(client = %peer, "pg: a malformed message was refused");
                    return end(&mut socket, fatal("08P01", "invalid message format")).await;
                }
            };
            if matches!(message, PgWireFrontendMessage::Terminate(_)) {
                return;
            }
            let is_extended = match socket.state() {
                State::CopyInProgress(e) => e,
                _ => message.is_extended_query(),
            };
            let handled = AssertUnwindSafe(pgwire::tokio::server::process_message(
                message,
                &mut socket,
                startup.clone(),
                simple.clone(),
                extended.clone(),
                copy.clone(),
                cancel.clone(),
            ))
            .catch_unwind()
            .await;
            match handled {
                Ok(Ok(())) => {}
                Ok(Err(mut e)) => {
                    errors.on_error(&socket, &mut e);
                    let info: ErrorInfo = e.into();
                    if authenticating || info.is_fatal() {
                        if authenticating {
                            info!(client = %peer, user = %signed_in_user(&socket), "pg: sign-in refused");
                        }
                        let _ = socket
                            .send(PgWireBackendMessage::ErrorResponse(info.into()))
                            .await;
                        let _ = socket.close().await;
                        return;
                    }
                    let error = PgWireError::UserError(Box::new(info));
                    if pgwire::tokio::server::process_error(&mut socket, error, is_extended)
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(_) => {
                    warn!(client = %peer, "pg: a message could not be handled");
                    return end(
                        &mut socket,
                        fatal("XX000", "internal error handling the message"),
                    )
                    .await;
                }
            }
            if authenticating && matches!(socket.state(), State::ReadyForQuery) {
                // Signed in: the sign-in slot is free for another client.
                drop(signing_in.take());
            }
        }
    }
}

/// Where in a connection's life bytes arrive, for [`decode_messages`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the startup message (which may be an SSL, GSS or cancel request).
    Startup,
    /// After it, while signing in (password and SASL messages).
    SigningIn,
    /// Signed in (queries, the extended protocol, COPY data).
    SignedIn,
}

/// Decodes the frontend messages in `bytes` one after the other as a connection in `phase`
/// would, up to the first that cannot be decoded: each message's name, or the protocol error
/// that ends the connection. A panic in the decoder is caught, as the connection loop catches
/// it, and is such an error: no input gets past this. The fuzz target `pg_messages` drives it.
pub fn decode_messages(bytes: &[u8], phase: Phase) -> Vec<Result<String, String>> {
    use pgwire::api::PgWireConnectionState as State;
    use tokio_util::codec::Decoder;
    let mut client = pgwire::api::DefaultClient::<PgStatement>::new(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        false,
    );
    client.state = match phase {
        Phase::Startup => State::AwaitingStartup,
        Phase::SigningIn => State::AuthenticationInProgress,
        Phase::SignedIn => State::ReadyForQuery,
    };
    let mut codec = pgwire::tokio::server::PgWireMessageServerCodec::new(client);
    let mut buf = bytes::BytesMut::from(bytes);
    let mut out = Vec::new();
    while out.len() < 10_000 {
        let decoded =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| codec.decode(&mut buf)));
        match decoded {
            Ok(Ok(Some(m))) => {
                let name: String = format!("{m:?}")
                    .chars()
                    .take_while(|c| c.is_alphanumeric())
                    .collect();
                if matches!(m, PgWireFrontendMessage::Startup(_)) {
                    codec.client_info.state = State::AuthenticationInProgress;
                }
                out.push(Ok(name));
            }
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                out.push(Err(format!("invalid message: {e}")));
                break;
            }
            Err(_) => {
                out.push(Err("invalid message format".to_string()));
                break;
            }
        }
    }
    out
}

/// The user a client names in its startup message.
fn signed_in_user(socket: &Socket) -> String {
    socket
        .metadata()
        .get(pgwire::api::METADATA_USER)
        .cloned()
        .unwrap_or_default()
}

/// Sends `error` and closes the connection.
async fn end(socket: &mut Socket, error: PgWireError) {
    use futures::SinkExt;
    let info: ErrorInfo = error.into();
    let _ = socket
        .send(PgWireBackendMessage::ErrorResponse(info.into()))
        .await;
    let _ = socket.close().await;
}

/// Tells a client past the connection limit so, as PostgreSQL does (SQLSTATE 53300), after
/// reading its startup message (declining TLS first if it asks).
async fn too_many_clients(mut socket: TcpStream, max: usize) {
    let answer = async {
        let mut head = [0u8; 8];
        socket.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let code = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        // SSLRequest and GSSENCRequest: decline, then the startup message follows.
        if len == 8 && (code == 80_877_103 || code == 80_877_104) {
            socket.write_all(b"N").await?;
            socket.read_exact(&mut head).await?;
        }
        let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let mut rest = vec![0u8; len.saturating_sub(8).min(10_000)];
        socket.read_exact(&mut rest).await?;
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', "FATAL".to_string()),
            (b'V', "FATAL".to_string()),
            (b'C', "53300".to_string()),
            (
                b'M',
                format!(
                    "sorry, too many clients already: this server takes {max} at once (server.pg_max_connections)"
                ),
            ),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut msg = vec![b'E'];
        msg.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        msg.extend_from_slice(&body);
        socket.write_all(&msg).await?;
        socket.shutdown().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), answer).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn malformed_messages_are_protocol_errors_in_every_phase() {
        // A Bind whose parameter claims 2^31-1 bytes: pgwire's decoder panics on it.
        let mut bind = b"\0\0\0\0\0\x01".to_vec();
        bind.extend_from_slice(&i32::MAX.to_be_bytes());
        bind.extend_from_slice(b"abc\0\0");
        let got = decode_messages(&message(b'B', &bind), Phase::SignedIn);
        assert_eq!(got, vec![Err("invalid message format".to_string())]);
        // A frame shorter than its own length field, in each phase.
        for phase in [Phase::Startup, Phase::SigningIn, Phase::SignedIn] {
            let got = decode_messages(b"p\0\0\0\x02", phase);
            assert!(
                got.iter().all(|r| r.is_err()) || got.is_empty(),
                "{phase:?}: {got:?}"
            );
        }
        // Well-formed messages decode, the startup message moving the phase on.
        let mut startup = 196_608u32.to_be_bytes().to_vec();
        startup.extend_from_slice(b"user\0tester\0\0");
        let mut bytes = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&startup);
        bytes.extend_from_slice(&message(b'p', b"secret\0"));
        let got = decode_messages(&bytes, Phase::Startup);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got.iter().all(|r| r.is_ok()), "{got:?}");
        let got = decode_messages(&message(b'Q', b"SELECT 1\0"), Phase::SignedIn);
        assert_eq!(got, vec![Ok("Query".to_string())]);
    }

    proptest::proptest! {
        /// Any bytes, in any phase, and well-formed frames of every message type with any
        /// body: messages, or one protocol error after which nothing is read; no panic gets
        /// out (the fuzz target `pg_messages` runs the same much longer).
        #[test]
        fn any_bytes_decode_or_end_in_one_error(
            phase in 0u8..3,
            raw in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            kind in proptest::sample::select(b"BCDEFHPQSXcdfp".to_vec()),
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..48),
        ) {
            let phase = [Phase::Startup, Phase::SigningIn, Phase::SignedIn][phase as usize];
            for bytes in [raw.clone(), message(kind, &body), [message(kind, &body), raw].concat()] {
                let got = decode_messages(&bytes, phase);
                if let Some(i) = got.iter().position(|r| r.is_err()) {
                    proptest::prop_assert_eq!(i + 1, got.len());
                }
            }
        }
    }
}
