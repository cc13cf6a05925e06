//! Reading secrets with aws-sdk-secretsmanager on the standard credential chain. The SDK's own
//! endpoint settings apply (`AWS_ENDPOINT_URL_SECRETS_MANAGER`, `AWS_ENDPOINT_URL`, a
//! profile's `endpoint_url`: VPC endpoints, and moto's server in the tests), as does the
//! region from `AWS_REGION` or the profile; a region in a secret's ARN wins.

use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use std::collections::HashMap;
use std::sync::Mutex;

/// Why a secret could not be read.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// No such secret (or no such version stage).
    #[error("Secrets Manager has no such secret (ResourceNotFoundException); check the name or ARN and the region")]
    NotFound,
    /// The caller may not read it.
    #[error("access denied ({0}); Tollgate's role needs secretsmanager:GetSecretValue on it, and kms:Decrypt on its key via Secrets Manager")]
    AccessDenied(String),
    /// No region to ask.
    #[error("no AWS region: set AWS_REGION (or a profile region), or give the secret's full ARN")]
    NoRegion,
    /// Anything else (network, throttling, the service).
    #[error("{0}")]
    Other(String),
}

/// One secret version as read.
pub struct Fetched {
    /// The SecretString.
    pub text: Option<zeroize::Zeroizing<String>>,
    /// Its VersionId.
    pub version_id: String,
}

/// A Secrets Manager client per region.
pub struct Fetcher {
    sdk: aws_config::SdkConfig,
    clients: Mutex<HashMap<String, aws_sdk_secretsmanager::Client>>,
}

impl Fetcher {
    /// Loads the SDK configuration from the standard chain (env, profile, web identity, ECS,
    /// IMDS), with the rustls/ring HTTP client the backend IAM path uses.
    pub async fn from_default_chain() -> Fetcher {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .load()
            .await;
        Fetcher {
            sdk,
            clients: Mutex::new(HashMap::new()),
        }
    }

    fn client(&self, secret: &str) -> Result<aws_sdk_secretsmanager::Client, FetchError> {
        let region = arn_region(secret)
            .map(str::to_string)
            .or_else(|| self.sdk.region().map(|r| r.to_string()))
            .ok_or(FetchError::NoRegion)?;
        let mut clients = crate::sync::lock(&self.clients);
        let client = clients.entry(region.clone()).or_insert_with(|| {
            let conf = aws_sdk_secretsmanager::config::Builder::from(&self.sdk)
                .region(aws_config::Region::new(region))
                .build();
            aws_sdk_secretsmanager::Client::from_conf(conf)
        });
        Ok(client.clone())
    }

    /// Reads `secret` at `stage` (AWSCURRENT, AWSPREVIOUS); `Ok(None)` when that stage does
    /// not exist (a secret never rotated has no AWSPREVIOUS).
    pub async fn get(&self, secret: &str, stage: &str) -> Result<Option<Fetched>, FetchError> {
        let client = self.client(secret)?;
        let r = client
            .get_secret_value()
            .secret_id(secret)
            .version_stage(stage)
            .send()
            .await;
        match r {
            Ok(out) => Ok(Some(Fetched {
                text: out
                    .secret_string()
                    .map(|s| zeroize::Zeroizing::new(s.to_string())),
                version_id: out.version_id().unwrap_or_default().to_string(),
            })),
            Err(e) => {
                let service = e.into_service_error();
                match &service {
                    GetSecretValueError::ResourceNotFoundException(_) if stage != "AWSCURRENT" => {
                        Ok(None)
                    }
                    GetSecretValueError::ResourceNotFoundException(_) => Err(FetchError::NotFound),
                    other => match other.code() {
                        Some("AccessDeniedException") | Some("AccessDenied") => {
                            Err(FetchError::AccessDenied(
                                other.message().unwrap_or_default().to_string(),
                            ))
                        }
                        Some(code) => Err(FetchError::Other(format!(
                            "{code}: {}",
                            other.message().unwrap_or_default()
                        ))),
                        None => Err(FetchError::Other(
                            aws_sdk_secretsmanager::error::DisplayErrorContext(&service)
                                .to_string(),
                        )),
                    },
                }
            }
        }
    }
}

/// The region in `arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME`, if `secret` is an ARN.
pub fn arn_region(secret: &str) -> Option<&str> {
    let mut parts = secret.split(':');
    let (arn, _partition, service, region) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (arn == "arn" && service == "secretsmanager" && !region.is_empty()).then_some(region)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_in_an_arn_is_found_and_names_have_none() {
        assert_eq!(
            arn_region("arn:aws:secretsmanager:eu-west-1:123456789012:secret:db/app-AbCdEf"),
            Some("eu-west-1")
        );
        assert_eq!(
            arn_region("arn:aws-cn:secretsmanager:cn-north-1:1:secret:x"),
            Some("cn-north-1")
        );
        assert_eq!(arn_region("db/app"), None);
        assert_eq!(arn_region("arn:aws:s3:::bucket"), None);
    }
}
