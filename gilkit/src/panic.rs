//! The text of a caught panic, for the error that reports it (a batch item's outcome, a batcher's
//! or a semaphore call's error, an `Executor` future's exception).

use std::any::Any;

/// The message of a caught panic: the payload of `panic!("...")` is a `&str` or a `String`.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
