//! Errors of the engine. Ops report a plain message ([`OpError`]); the graph wraps it with the
//! node's name and op so that the user reads which layer failed and why.

use thiserror::Error;

/// What went wrong inside one op (shapes, parameters). No node name: the graph adds it.
#[derive(Debug, Clone, PartialEq, Error)]
#[error("{0}")]
pub struct OpError(pub String);

impl OpError {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// Shorthand for returning an [`OpError`] with a formatted message.
#[macro_export]
macro_rules! op_bail {
    ($($arg:tt)*) => {
        return Err($crate::engine::error::OpError(format!($($arg)*)))
    };
}

#[derive(Debug, Clone, PartialEq, Error)]
pub enum GraphError {
    #[error("node '{node}' ({op}): {msg}")]
    Node {
        node: String,
        op: String,
        msg: String,
    },
    #[error("node '{node}' refers to unknown value '{name}'")]
    UnknownValue { node: String, name: String },
    #[error("the graph has a cycle through the nodes {0}")]
    Cycle(String),
    #[error("the name '{0}' is defined more than once")]
    DuplicateName(String),
    #[error("input '{name}': expected shape {expected}, got {got}")]
    InputShape {
        name: String,
        expected: String,
        got: String,
    },
    #[error("parameter '{name}': {msg}")]
    Param { name: String, msg: String },
    #[error("{0}")]
    Other(String),
}

pub type GraphResult<T> = Result<T, GraphError>;
