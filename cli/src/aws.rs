//! The AWS SDK configuration of the commands that call AWS, with the errors a
//! new user meets first as one line each: no region, no credentials.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::ProvideCredentials;

/// The SDK's configuration (its default chain, `region` over it), checked: a
/// region is set and credentials are found, or one line says how to fix it.
pub async fn checked_sdk_config(region: Option<&str>) -> anyhow::Result<SdkConfig> {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_owned()));
    }
    let sdk = loader.load().await;
    anyhow::ensure!(
        sdk.region().is_some(),
        "no AWS region: set AWS_REGION (for example AWS_REGION=eu-west-1), pass --region, or set a region in ~/.aws/config"
    );
    let provider = sdk.credentials_provider().ok_or_else(|| anyhow::anyhow!("no AWS credentials provider"))?;
    if let Err(error) = provider.provide_credentials().await {
        anyhow::bail!(
            "no AWS credentials: set AWS_PROFILE (a profile of ~/.aws/config), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or run where a role provides them ({})",
            first_line(&error)
        );
    }
    Ok(sdk)
}

/// The error's own message, without its chain of causes.
fn first_line(error: &dyn std::error::Error) -> String {
    error.to_string().lines().next().unwrap_or_default().to_owned()
}
