//! What happened to one item: [`Outcome`], and [`ItemError`] for code that prefers `Result`.

use std::fmt;

/// What happened to one item of a batch. A batch returns one per input item, in input order.
///
/// # Examples
///
/// ```
/// use gilkit::batch::{self, BatchOptions, Outcome};
///
/// let report = batch::run_cpu(&[4, 0, 2], &BatchOptions::default(), |&n| {
///     if n == 0 { Err("zero") } else { Ok(8 / n) }
/// });
/// assert!(matches!(report.outcomes[..], [Outcome::Ok(2), Outcome::Err("zero"), Outcome::Ok(4)]));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "an outcome may be an error that should be handled"]
pub enum Outcome<T, E> {
    /// The item's work returned `Ok`.
    Ok(T),
    /// The item's work returned `Err`.
    Err(E),
    /// The item's work panicked; the panic message (or a placeholder for a non-string payload).
    /// The panic was caught: the other items ran on.
    Panicked(String),
    /// The item did not finish in time: its own `item_timeout` ran out, or the batch deadline
    /// passed before it finished (or started).
    TimedOut,
    /// The batch was cancelled before the item finished (or started).
    Cancelled,
}

impl<T, E> Outcome<T, E> {
    /// Returns `true` for [`Outcome::Ok`].
    #[must_use]
    pub fn is_ok(&self) -> bool {
        matches!(self, Self::Ok(_))
    }

    /// Returns `true` for [`Outcome::Err`].
    #[must_use]
    pub fn is_err(&self) -> bool {
        matches!(self, Self::Err(_))
    }

    /// Returns `true` for [`Outcome::Panicked`].
    #[must_use]
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// Returns `true` for [`Outcome::TimedOut`].
    #[must_use]
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Self::TimedOut)
    }

    /// Returns `true` for [`Outcome::Cancelled`].
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// The value of an [`Outcome::Ok`], or `None`.
    pub fn ok(self) -> Option<T> {
        match self {
            Self::Ok(value) => Some(value),
            _ => None,
        }
    }

    /// Converts to a `Result`, so `?` works on one item.
    ///
    /// # Errors
    /// Every outcome but `Ok`, as the matching [`ItemError`].
    pub fn into_result(self) -> Result<T, ItemError<E>> {
        match self {
            Self::Ok(value) => Ok(value),
            Self::Err(error) => Err(ItemError::Failed(error)),
            Self::Panicked(message) => Err(ItemError::Panicked(message)),
            Self::TimedOut => Err(ItemError::TimedOut),
            Self::Cancelled => Err(ItemError::Cancelled),
        }
    }

    /// The outcome's name, as used in statistics and Python: `"ok"`, `"err"`, `"panicked"`,
    /// `"timed_out"` or `"cancelled"`.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Ok(_) => "ok",
            Self::Err(_) => "err",
            Self::Panicked(_) => "panicked",
            Self::TimedOut => "timed_out",
            Self::Cancelled => "cancelled",
        }
    }
}

/// Why one item has no value: the error of [`Outcome::into_result`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemError<E> {
    /// The item's work returned this error.
    Failed(E),
    /// The item's work panicked with this message.
    Panicked(String),
    /// The item did not finish before its timeout or the batch deadline.
    TimedOut,
    /// The batch was cancelled before the item finished.
    Cancelled,
}

impl<E> ItemError<E> {
    /// Returns `true` for [`ItemError::Failed`].
    #[must_use]
    pub fn is_failed(&self) -> bool {
        matches!(self, Self::Failed(_))
    }

    /// Returns `true` for [`ItemError::Panicked`].
    #[must_use]
    pub fn is_panicked(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// Returns `true` for [`ItemError::TimedOut`].
    #[must_use]
    pub fn is_timed_out(&self) -> bool {
        matches!(self, Self::TimedOut)
    }

    /// Returns `true` for [`ItemError::Cancelled`].
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }
}

impl<E: fmt::Display> fmt::Display for ItemError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(error) => write!(f, "the item failed: {error}"),
            Self::Panicked(message) => write!(f, "the item panicked: {message}"),
            Self::TimedOut => f.write_str(
                "the item did not finish before its timeout or the batch deadline; \
                 raise item_timeout or the deadline, or make the work faster",
            ),
            Self::Cancelled => f.write_str("the batch was cancelled before the item finished"),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for ItemError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Failed(error) => Some(error),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_convert_to_results_with_the_matching_error() {
        let outcomes: [Outcome<u8, &str>; 5] = [
            Outcome::Ok(1),
            Outcome::Err("bad"),
            Outcome::Panicked("boom".into()),
            Outcome::TimedOut,
            Outcome::Cancelled,
        ];
        let kinds: Vec<_> = outcomes.iter().map(Outcome::kind).collect();
        assert_eq!(kinds, ["ok", "err", "panicked", "timed_out", "cancelled"]);
        let [ok, err, panicked, timed_out, cancelled] = outcomes.map(Outcome::into_result);
        assert_eq!(ok, Ok(1));
        assert!(err.unwrap_err().is_failed());
        assert!(panicked.clone().unwrap_err().is_panicked());
        assert!(timed_out.unwrap_err().is_timed_out());
        assert!(cancelled.unwrap_err().is_cancelled());
        assert_eq!(panicked.unwrap_err().to_string(), "the item panicked: boom");
    }

    #[test]
    fn a_failed_item_error_keeps_its_source() {
        use std::error::Error as _;
        let io = std::io::Error::other("disk on fire");
        let error: ItemError<std::io::Error> = Outcome::<(), _>::Err(io).into_result().unwrap_err();
        assert_eq!(error.to_string(), "the item failed: disk on fire");
        assert_eq!(error.source().unwrap().to_string(), "disk on fire");
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        use crate::panic::panic_message;
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("owned")), "owned");
        assert_eq!(panic_message(&7_u32), "a panic with a non-string payload");
    }
}
