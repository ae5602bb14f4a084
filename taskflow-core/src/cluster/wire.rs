//! The one ractor message type that crosses processes: an opaque envelope per variant.
//!
//! ractor_cluster's `BytesConvertable::from_bytes` cannot fail, and a message it cannot map to
//! a variant is dropped silently. So [`Wire`] accepts *any* variant name from the network as
//! bytes (a cast becomes [`Wire::Cast`], a call [`Wire::Call`]); the handler decodes the
//! envelope into a `Result` ([`super::codec::decode`]) and rejects — and logs once — what it
//! does not understand.

use ractor::RpcReplyPort;
use ractor::message::{BoxedDowncastErr, SerializedMessage};

/// A cluster message: an envelope ([`super::codec`]) one way, or a call with a reply port
/// that carries an envelope back.
#[derive(Debug)]
pub enum Wire {
    /// A one-way message.
    Cast(Vec<u8>),
    /// A request; the reply is an envelope of [`super::messages::Reply`].
    Call(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

const CAST: &str = "Cast";
const CALL: &str = "Call";

impl ractor::Message for Wire {
    fn serializable() -> bool {
        true
    }

    fn serialize(self) -> Result<SerializedMessage, BoxedDowncastErr> {
        Ok(match self {
            Wire::Cast(args) => {
                SerializedMessage::Cast { variant: CAST.into(), args, metadata: None }
            }
            Wire::Call(args, reply) => {
                SerializedMessage::Call { variant: CALL.into(), args, reply, metadata: None }
            }
        })
    }

    fn deserialize(msg: SerializedMessage) -> Result<Self, BoxedDowncastErr> {
        // Any variant name is accepted: the envelope inside says what it is.
        match msg {
            SerializedMessage::Cast { args, .. } => Ok(Wire::Cast(args)),
            SerializedMessage::Call { args, reply, .. } => Ok(Wire::Call(args, reply)),
            SerializedMessage::CallReply(..) => Err(BoxedDowncastErr),
        }
    }
}
