//! The one refusal type and its one mapping to the wire.
//!
//! Every way a request can fail to get a tool's answer is a [`RefusalKind`];
//! [`Refusal::wire`] is the single exhaustive match that decides its HTTP
//! status, JSON-RPC code, message and the one header it carries, and [`RefusalKind::reason`] the
//! machine-readable reason written to the audit record. No wildcard arms: a
//! new kind must be placed on the wire deliberately.

use std::borrow::Cow;

use crate::audit::Decision;
use crate::jwt::TokenError;
use crate::protocol::codes;

/// Where the fault lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The agent's request.
    Downstream,
    /// toolgate itself (policy, audit pipeline, limits).
    Gateway,
    /// The upstream tool server.
    Upstream,
}

/// Every reason a request is not answered by a tool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalKind {
    /// Unparseable HTTP.
    MalformedHttp,
    /// Request head over `server.max_header_bytes` or `server.max_headers`.
    HeadersTooLarge,
    /// Body over `server.max_body_bytes`.
    BodyTooLarge,
    /// Head or body not received in time.
    RequestTimeout,
    /// A path toolgate does not serve.
    PathNotFound,
    /// An HTTP method the path does not serve.
    MethodNotAllowed,
    /// `Content-Type` is not JSON.
    UnsupportedMediaType,
    /// `Accept` allows neither JSON nor SSE.
    NotAcceptable,
    /// Body is not JSON.
    ParseError,
    /// JSON that is not an acceptable JSON-RPC request.
    InvalidRequest,
    /// Method not served.
    MethodNotFound,
    /// Bad parameters.
    InvalidParams,
    /// Tool not attached to the agent (or not existing: indistinguishable on purpose).
    UnknownTool,
    /// Prompt not attached to the agent (or not existing, alike).
    UnknownPrompt,
    /// Resource not attached to the agent (or not existing, alike).
    UnknownResource,
    /// The prompt's definition is held back by pinning.
    PromptQuarantined,
    /// Routing headers disagree with the body.
    HeaderMismatch,
    /// Protocol version not served.
    UnsupportedProtocolVersion,
    /// Handshake-era request without `Mcp-Session-Id`.
    MissingSession,
    /// `Mcp-Session-Id` not issued by this gateway, expired, or terminated.
    SessionNotFound,
    /// No `Authorization` header.
    MissingCredential,
    /// `Authorization` present but malformed or the key is unknown.
    UnknownCredential,
    /// A bearer JWT that did not verify, or names no configured agent.
    InvalidToken(TokenError),
    /// The session belongs to another agent.
    SessionIdentityMismatch,
    /// The bearer credential names another agent than the connection's
    /// verified client certificate.
    CertificateMismatch,
    /// The agent named an end user but is not allowed to act for users.
    UserAssertionRefused,
    /// Cedar policy denied the call.
    PolicyDenied,
    /// The judge of an escalated call said no.
    JudgeDenied,
    /// The judge of an escalated call did not answer usably in time: deny.
    JudgeUnavailable,
    /// The audit pipeline cannot take the record: fail closed.
    AuditUnavailable,
    /// Shard at its connection limit.
    Overloaded,
    /// Upstream refused or dropped the connection.
    UpstreamUnavailable,
    /// Upstream did not answer within its `timeout_ms`.
    UpstreamTimeout,
    /// Upstream answered something that is not an MCP response.
    UpstreamBadResponse,
    /// The agent cancelled the call (`notifications/cancelled`) while its
    /// upstream worked on it.
    Cancelled,
    /// The upstream's credential could not be obtained (an OAuth token
    /// endpoint failing past the token's expiry, a credential file rewritten
    /// without a usable value): nothing was sent.
    UpstreamCredentialUnavailable,
    /// The upstream takes the end user's own token (`token_exchange`) and
    /// the call carries none: no user, or a user not named by the IdP's
    /// token (an API key, a sub-token, `Toolgate-On-Behalf-Of`).
    UserTokenRequired,
    /// The upstream acts on the end user's own account and the user has
    /// not connected it (or must connect it again): the answer carries the
    /// link, as a URL-mode elicitation where the agent's client takes one.
    UserNotConnected {
        /// The agent's client declared URL-mode elicitation.
        url_elicitation: bool,
    },
    /// A connect link that is not toolgate's, expired, or for another
    /// upstream.
    ConnectLinkInvalid,
    /// An OAuth callback whose `state` is not toolgate's, expired, taken
    /// before (a replay), or arrived in another browser than the one that
    /// started the consent.
    ConnectStateInvalid,
    /// The provider answered the consent with an error (the user declined).
    ConnectRefused,
    /// The browser's signed-in user (`[connected_accounts] user_header`)
    /// is not the one the link or consent is for.
    ConnectUserMismatch,
    /// The consent's code could not be redeemed or the grant kept.
    ConnectFailed,
    /// The IdP did not exchange the user's token for the upstream (down,
    /// slow, refused, or answered garbage): nothing was sent.
    TokenExchangeFailed,
    /// An output rule's `refuse_when` condition held for the tool's result.
    OutputRefused,
    /// A rule applying to arguments refused the call before it left.
    ArgumentsRefused,
    /// The tool's definition changed since it was approved (tool pinning).
    ToolQuarantined,
    /// The agent is over its `rate_limit`, or the call over a rate of
    /// `[[limits.rules]]`.
    RateLimited,
    /// The call is over a quota of `[[limits.rules]]`.
    QuotaExceeded,
    /// No limit counter could be placed for the call (`limits.max_counters`).
    LimitTableFull,
    /// A result of a tool with output rules was over `output.max_result_bytes`.
    OutputTooLarge,
}

/// A refusal: its kind, where the fault lies, and an optional detail safe to
/// show the agent (its own input, never internals).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What happened.
    pub kind: RefusalKind,
    /// Whose fault.
    pub origin: Origin,
    /// Extra words for the agent, appended to the message.
    pub detail: Option<Cow<'static, str>>,
}

/// A refusal as it goes on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wire {
    /// HTTP status.
    pub status: u16,
    /// JSON-RPC error code.
    pub code: i64,
    /// JSON-RPC error message.
    pub message: Cow<'static, str>,
    /// The header the response carries besides the body.
    pub header: WireHeader,
}

/// The one header a refusal's response carries besides its body; the
/// server fills in the value it alone knows (the wait, the challenge, the
/// path's methods).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireHeader {
    /// None.
    None,
    /// `Retry-After`: seconds until a retry can succeed.
    RetryAfter,
    /// `WWW-Authenticate`: the bearer challenge (RFC 6750, RFC 9728).
    Challenge,
    /// `Allow`: the methods the path serves.
    Allow,
}

impl WireHeader {
    /// The header's name, `None` for [`WireHeader::None`].
    pub fn name(self) -> Option<&'static str> {
        match self {
            WireHeader::None => None,
            WireHeader::RetryAfter => Some("Retry-After"),
            WireHeader::Challenge => Some("WWW-Authenticate"),
            WireHeader::Allow => Some("Allow"),
        }
    }
}

impl RefusalKind {
    /// Where a kind's fault lies.
    pub fn origin(self) -> Origin {
        use RefusalKind::*;
        match self {
            MalformedHttp
            | HeadersTooLarge
            | BodyTooLarge
            | RequestTimeout
            | PathNotFound
            | MethodNotAllowed
            | UnsupportedMediaType
            | NotAcceptable
            | ParseError
            | InvalidRequest
            | MethodNotFound
            | InvalidParams
            | UnknownTool
            | UnknownPrompt
            | UnknownResource
            | HeaderMismatch
            | UnsupportedProtocolVersion
            | MissingSession
            | SessionNotFound
            | MissingCredential
            | UnknownCredential
            | InvalidToken(_)
            | SessionIdentityMismatch
            | CertificateMismatch
            | UserAssertionRefused
            | UserTokenRequired
            | UserNotConnected { .. }
            | ConnectLinkInvalid
            | ConnectStateInvalid
            | ConnectRefused
            | ConnectUserMismatch
            | Cancelled => Origin::Downstream,
            AuditUnavailable
            | Overloaded
            | PolicyDenied
            | JudgeDenied
            | JudgeUnavailable
            | OutputRefused
            | OutputTooLarge
            | UpstreamCredentialUnavailable
            | TokenExchangeFailed
            | ConnectFailed
            | ArgumentsRefused
            | ToolQuarantined
            | PromptQuarantined
            | RateLimited
            | QuotaExceeded
            | LimitTableFull => Origin::Gateway,
            UpstreamUnavailable | UpstreamTimeout | UpstreamBadResponse => Origin::Upstream,
        }
    }

    /// The snake_case reason recorded in the audit trail.
    pub fn reason(self) -> &'static str {
        use RefusalKind::*;
        match self {
            MalformedHttp => "malformed_http",
            HeadersTooLarge => "headers_too_large",
            BodyTooLarge => "body_too_large",
            RequestTimeout => "request_timeout",
            PathNotFound => "path_not_found",
            MethodNotAllowed => "http_method_not_allowed",
            UnsupportedMediaType => "unsupported_media_type",
            NotAcceptable => "not_acceptable",
            ParseError => "parse_error",
            InvalidRequest => "invalid_request",
            MethodNotFound => "method_not_found",
            InvalidParams => "invalid_params",
            UnknownTool => "tool_not_attached",
            UnknownPrompt => "prompt_not_attached",
            UnknownResource => "resource_not_attached",
            HeaderMismatch => "header_mismatch",
            UnsupportedProtocolVersion => "unsupported_protocol_version",
            MissingSession => "missing_session",
            SessionNotFound => "session_not_found",
            MissingCredential => "missing_api_key",
            UnknownCredential => "unknown_api_key",
            InvalidToken(e) => e.reason(),
            SessionIdentityMismatch => "session_identity_mismatch",
            CertificateMismatch => "certificate_agent_mismatch",
            UserAssertionRefused => "user_assertion_refused",
            PolicyDenied => "denied_by_policy",
            JudgeDenied => "denied_by_judge",
            JudgeUnavailable => "judge_unavailable",
            AuditUnavailable => "audit_unavailable",
            Overloaded => "overloaded",
            UpstreamUnavailable => "upstream_unavailable",
            UpstreamTimeout => "upstream_timeout",
            UpstreamBadResponse => "upstream_bad_response",
            Cancelled => "cancelled",
            UpstreamCredentialUnavailable => "upstream_credential_unavailable",
            UserTokenRequired => "user_token_required",
            UserNotConnected { .. } => "user_not_connected",
            ConnectLinkInvalid => "connect_link_invalid",
            ConnectStateInvalid => "connect_state_invalid",
            ConnectRefused => "connect_refused",
            ConnectUserMismatch => "connect_user_mismatch",
            ConnectFailed => "connect_failed",
            TokenExchangeFailed => "token_exchange_failed",
            OutputRefused => "output_refused",
            ArgumentsRefused => "arguments_refused",
            ToolQuarantined => "tool_quarantined",
            PromptQuarantined => "prompt_quarantined",
            RateLimited => "rate_limited",
            QuotaExceeded => "quota_exceeded",
            LimitTableFull => "limit_table_full",
            OutputTooLarge => "output_too_large",
        }
    }

    /// The audit decision: upstream failures, and calls the agent
    /// cancelled while they ran, happened to allowed calls.
    pub fn decision(self) -> Decision {
        match self.origin() {
            _ if self == RefusalKind::Cancelled => Decision::Allow,
            Origin::Upstream => Decision::Allow,
            Origin::Downstream | Origin::Gateway => Decision::Deny,
        }
    }
}

impl Refusal {
    /// A refusal of `kind` with no detail.
    pub fn new(kind: RefusalKind) -> Self {
        Self {
            kind,
            origin: kind.origin(),
            detail: None,
        }
    }

    /// A refusal of `kind` with a detail for the agent.
    pub fn with(kind: RefusalKind, detail: impl Into<Cow<'static, str>>) -> Self {
        Self {
            kind,
            origin: kind.origin(),
            detail: Some(detail.into()),
        }
    }

    /// The HTTP status, JSON-RPC code and message.
    pub fn wire(&self) -> Wire {
        use RefusalKind::*;
        use WireHeader::{Allow, Challenge, RetryAfter};
        let none = WireHeader::None;
        let (status, code, message, header): (u16, i64, &'static str, WireHeader) = match self.kind
        {
            MalformedHttp => (400, codes::INVALID_REQUEST, "malformed HTTP request", none),
            HeadersTooLarge => (
                431,
                codes::INVALID_REQUEST,
                "request headers too large",
                none,
            ),
            BodyTooLarge => (413, codes::INVALID_REQUEST, "request body too large", none),
            RequestTimeout => (
                408,
                codes::INVALID_REQUEST,
                "request not received in time",
                none,
            ),
            PathNotFound => (
                404,
                codes::INVALID_REQUEST,
                "not found: MCP is served at /mcp",
                none,
            ),
            MethodNotAllowed => (
                405,
                codes::INVALID_REQUEST,
                "HTTP method not allowed here",
                Allow,
            ),
            UnsupportedMediaType => (
                415,
                codes::INVALID_REQUEST,
                "Content-Type must be application/json",
                none,
            ),
            NotAcceptable => (
                406,
                codes::INVALID_REQUEST,
                "Accept must allow application/json or text/event-stream",
                none,
            ),
            ParseError => (400, codes::PARSE_ERROR, "Parse error", none),
            InvalidRequest => (400, codes::INVALID_REQUEST, "Invalid Request", none),
            MethodNotFound => (404, codes::METHOD_NOT_FOUND, "Method not found", none),
            InvalidParams => (400, codes::INVALID_PARAMS, "Invalid params", none),
            UnknownTool => (400, codes::INVALID_PARAMS, "Unknown tool", none),
            UnknownPrompt => (400, codes::INVALID_PARAMS, "Unknown prompt", none),
            UnknownResource => (404, codes::RESOURCE_NOT_FOUND, "Resource not found", none),
            HeaderMismatch => (400, codes::HEADER_MISMATCH, "Header mismatch", none),
            UnsupportedProtocolVersion => (
                400,
                codes::UNSUPPORTED_PROTOCOL_VERSION,
                "Unsupported protocol version",
                none,
            ),
            MissingSession => (
                400,
                codes::INVALID_REQUEST,
                "Bad Request: Mcp-Session-Id header is required",
                none,
            ),
            SessionNotFound => (404, codes::INVALID_REQUEST, "Session not found", none),
            MissingCredential => (
                401,
                codes::UNAUTHENTICATED,
                "Unauthorized: an API key is required",
                Challenge,
            ),
            UnknownCredential => (
                401,
                codes::UNAUTHENTICATED,
                "Unauthorized: invalid API key",
                Challenge,
            ),
            InvalidToken(e) => (401, codes::UNAUTHENTICATED, token_message(e), Challenge),
            SessionIdentityMismatch => (404, codes::INVALID_REQUEST, "Session not found", none),
            CertificateMismatch => (
                403,
                codes::FORBIDDEN,
                "Forbidden: the credential names another agent than the client certificate",
                none,
            ),
            UserAssertionRefused => (
                403,
                codes::FORBIDDEN,
                "this agent may not act on behalf of users",
                none,
            ),
            PolicyDenied => (403, codes::FORBIDDEN, "Denied by policy", none),
            JudgeDenied => (403, codes::FORBIDDEN, "Denied by reviewer", none),
            JudgeUnavailable => (
                403,
                codes::FORBIDDEN,
                "Denied: the reviewer did not answer",
                none,
            ),
            AuditUnavailable => (
                503,
                codes::SERVER_ERROR,
                "audit pipeline unavailable; call refused",
                RetryAfter,
            ),
            Overloaded => (
                503,
                codes::SERVER_ERROR,
                "gateway overloaded; retry later",
                RetryAfter,
            ),
            UpstreamUnavailable => (502, codes::INTERNAL_ERROR, "upstream unavailable", none),
            UpstreamTimeout => (504, codes::INTERNAL_ERROR, "upstream timed out", none),
            // 200: the answer to a cancelled call may already be an event
            // stream under way.
            Cancelled => (200, codes::REQUEST_CANCELLED, "Request cancelled", none),
            UpstreamBadResponse => (
                502,
                codes::INTERNAL_ERROR,
                "upstream sent an invalid response",
                none,
            ),
            UpstreamCredentialUnavailable => (
                503,
                codes::SERVER_ERROR,
                "upstream credential unavailable; retry later",
                none,
            ),
            UserNotConnected { url_elicitation } => (
                if url_elicitation { 200 } else { 403 },
                if url_elicitation {
                    codes::URL_ELICITATION_REQUIRED
                } else {
                    codes::FORBIDDEN
                },
                "this tool acts on the end user's own account, which is not connected",
                none,
            ),
            ConnectLinkInvalid => (
                400,
                codes::INVALID_REQUEST,
                "this connect link is invalid or has expired: ask the agent for a new one",
                none,
            ),
            ConnectStateInvalid => (
                400,
                codes::INVALID_REQUEST,
                "this consent is invalid, has expired, was used already, or was started in another browser: start again from a new link",
                none,
            ),
            ConnectRefused => (
                403,
                codes::FORBIDDEN,
                "the account was not connected: the provider refused or the user declined",
                none,
            ),
            ConnectUserMismatch => (
                403,
                codes::FORBIDDEN,
                "this link is for another user than the one signed in",
                none,
            ),
            ConnectFailed => (
                502,
                codes::SERVER_ERROR,
                "the account could not be connected: the provider's answer could not be used; try again",
                none,
            ),
            UserTokenRequired => (
                403,
                codes::FORBIDDEN,
                "this tool acts as the end user: call it with the user's own token from the identity provider",
                none,
            ),
            TokenExchangeFailed => (
                502,
                codes::SERVER_ERROR,
                "the end user's token could not be exchanged for this tool; nothing was sent",
                none,
            ),
            OutputRefused => (
                403,
                codes::OUTPUT_REFUSED,
                "tool result refused by output policy",
                none,
            ),
            ArgumentsRefused => (
                403,
                codes::FORBIDDEN,
                "call refused: its arguments hold data that must not leave",
                none,
            ),
            ToolQuarantined => (
                403,
                codes::FORBIDDEN,
                "tool held back: its definition changed since it was approved",
                none,
            ),
            PromptQuarantined => (
                403,
                codes::FORBIDDEN,
                "prompt held back: its definition changed since it was approved",
                none,
            ),
            RateLimited => (
                429,
                codes::SERVER_ERROR,
                "rate limit exceeded; retry later",
                RetryAfter,
            ),
            QuotaExceeded => (
                429,
                codes::SERVER_ERROR,
                "quota exceeded; retry when the window resets",
                RetryAfter,
            ),
            LimitTableFull => (
                429,
                codes::SERVER_ERROR,
                "limit counters are full; retry later",
                RetryAfter,
            ),
            OutputTooLarge => (
                502,
                codes::OUTPUT_REFUSED,
                "tool result too large to filter; refused",
                none,
            ),
        };
        let message = match &self.detail {
            Some(d) => Cow::Owned(format!("{message}: {d}")),
            None => Cow::Borrowed(message),
        };
        Wire {
            status,
            code,
            message,
            header,
        }
    }
}

/// The agent-facing message of a refused token.
fn token_message(e: TokenError) -> &'static str {
    match e {
        TokenError::Malformed => "Unauthorized: token is malformed",
        TokenError::AlgorithmRefused => "Unauthorized: token algorithm not accepted",
        TokenError::UnknownKey => "Unauthorized: token signed by an unknown key",
        TokenError::BadSignature => "Unauthorized: token signature does not verify",
        TokenError::Expired => "Unauthorized: token expired",
        TokenError::NotYetValid => "Unauthorized: token not yet valid",
        TokenError::WrongIssuer => "Unauthorized: token from another issuer",
        TokenError::WrongAudience => "Unauthorized: token meant for another audience",
        TokenError::MissingClaim => "Unauthorized: token lacks the agent or subject claim",
        TokenError::UnknownAgent => "Unauthorized: token names an unknown agent",
        TokenError::Revoked => "Unauthorized: token revoked",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unattached_tool_looks_like_a_missing_tool() {
        let w = Refusal::with(RefusalKind::UnknownTool, "`crm__delete`").wire();
        assert_eq!((w.status, w.code), (400, codes::INVALID_PARAMS));
        assert_eq!(w.message, "Unknown tool: `crm__delete`");
    }

    #[test]
    fn upstream_failures_are_allowed_calls_that_failed() {
        assert_eq!(RefusalKind::UpstreamTimeout.decision(), Decision::Allow);
        assert_eq!(RefusalKind::UnknownTool.decision(), Decision::Deny);
        // A call the agent cancelled was allowed; its answer is a JSON-RPC
        // error that fits an event stream already under way.
        assert_eq!(RefusalKind::Cancelled.decision(), Decision::Allow);
        let w = Refusal::new(RefusalKind::Cancelled).wire();
        assert_eq!((w.status, w.code), (200, -32800));
        assert_eq!(
            Refusal::new(RefusalKind::UpstreamTimeout).wire().status,
            504
        );
    }

    #[test]
    fn refused_output_is_a_gateway_denial_with_its_own_code() {
        let w = Refusal::new(RefusalKind::OutputRefused).wire();
        assert_eq!((w.status, w.code), (403, codes::OUTPUT_REFUSED));
        assert_eq!(RefusalKind::OutputRefused.decision(), Decision::Deny);
        assert_eq!(RefusalKind::OutputTooLarge.reason(), "output_too_large");
        assert_eq!(Refusal::new(RefusalKind::OutputTooLarge).wire().status, 502);
    }

    #[test]
    fn refused_tokens_are_401_with_their_own_reason() {
        let r = Refusal::new(RefusalKind::InvalidToken(TokenError::Expired));
        assert_eq!(
            (r.wire().status, r.wire().code),
            (401, codes::UNAUTHENTICATED)
        );
        assert_eq!(r.kind.reason(), "token_expired");
        assert_eq!(r.kind.decision(), Decision::Deny);
    }

    #[test]
    fn refusals_that_ask_for_a_retry_or_a_credential_say_so_in_a_header() {
        let header = |k| Refusal::new(k).wire().header;
        assert_eq!(header(RefusalKind::RateLimited), WireHeader::RetryAfter);
        assert_eq!(
            header(RefusalKind::AuditUnavailable),
            WireHeader::RetryAfter
        );
        assert_eq!(
            header(RefusalKind::MissingCredential),
            WireHeader::Challenge
        );
        assert_eq!(
            header(RefusalKind::InvalidToken(TokenError::Expired)),
            WireHeader::Challenge
        );
        assert_eq!(header(RefusalKind::MethodNotAllowed), WireHeader::Allow);
        assert_eq!(header(RefusalKind::PolicyDenied), WireHeader::None);
    }

    #[test]
    fn session_of_another_agent_is_indistinguishable_from_unknown() {
        let a = Refusal::new(RefusalKind::SessionIdentityMismatch).wire();
        let b = Refusal::new(RefusalKind::SessionNotFound).wire();
        assert_eq!(a, b);
    }
}
