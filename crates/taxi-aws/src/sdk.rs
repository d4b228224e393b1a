//! Shared handling of AWS SDK errors.

use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};

/// What an SDK error says, briefly: `Code: message` from the service when it
/// answered, otherwise the chain of causes (timeouts, refused connections,
/// missing credentials), each once, without the SDK's debug dump of its types.
pub fn error_message<E, R>(error: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => {
            let mut parts: Vec<String> = vec![error.to_string()];
            let mut cause = std::error::Error::source(error);
            while let Some(e) = cause {
                let text = e.to_string();
                // A wrapper often repeats its source's text after its own.
                if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
                    parts.push(text);
                }
                cause = e.source();
            }
            parts.join(": ")
        }
    }
}
