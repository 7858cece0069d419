//! The socket protocol: one JSON object per line each way.
//!
//! Requests: `{"cmd":"status"}`, `{"cmd":"members"}`, `{"cmd":"flows","limit":50}`
//! (`limit` optional, default [`DEFAULT_FLOW_LIMIT`], at most [`MAX_FLOW_LIMIT`]) and
//! `{"cmd":"explain","client":"10.0.0.100:40000","vip":"172.16.200.20:80","protocol":"TCP"}`.
//!
//! Responses name their content: `{"status":{..}}`, `{"members":[..]}`,
//! `{"flows":{..}}`, `{"explanation":{..}}`, or `{"error":{"message":".."}}` for a
//! request that could not be answered. A connection may carry any number of requests.

use std::net::SocketAddrV4;

use serde::{Deserialize, Serialize};

use crate::{
    model::Protocol,
    status::{AgentStatus, Explanation, FlowList, MemberStatus, StatusProvider},
};

/// Flows returned when a request names no limit.
pub const DEFAULT_FLOW_LIMIT: usize = 100;
/// Larger limits are capped to this.
pub const MAX_FLOW_LIMIT: usize = 100_000;

/// Unknown fields are errors, so a misspelt field is never silently ignored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    // Braced: serde checks unknown fields of struct variants only.
    Status {},
    Members {},
    Flows {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<usize>,
    },
    Explain {
        client: SocketAddrV4,
        vip: SocketAddrV4,
        protocol: Protocol,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Status(AgentStatus),
    Members(Vec<MemberStatus>),
    Flows(FlowList),
    Explanation(Explanation),
    Error(ErrorBody),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub message: String,
}

impl Response {
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error(ErrorBody {
            message: message.into(),
        })
    }
}

/// Parses one request line; the error says what was wrong, for an error response.
pub fn parse(line: &[u8]) -> Result<Request, String> {
    serde_json::from_slice(line).map_err(|error| {
        format!(
            "invalid request: {error}; send one JSON object per line, e.g. {{\"cmd\":\"status\"}} \
             (commands: status, members, flows, explain)"
        )
    })
}

/// Answers one request. May block on map reads: call it off the async threads.
pub fn handle(provider: &dyn StatusProvider, request: Request) -> Response {
    match request {
        Request::Status {} => Response::Status(provider.status()),
        Request::Members {} => Response::Members(provider.members()),
        Request::Flows { limit } => {
            let limit = limit.unwrap_or(DEFAULT_FLOW_LIMIT).min(MAX_FLOW_LIMIT);
            provider
                .flows(limit)
                .map_or_else(|error| Response::error(error.to_string()), Response::Flows)
        }
        Request::Explain {
            client,
            vip,
            protocol,
        } => provider.explain(client, vip, protocol).map_or_else(
            |error| Response::error(error.to_string()),
            Response::Explanation,
        ),
    }
}
