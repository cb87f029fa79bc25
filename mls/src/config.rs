//! The mls-rs client configuration shared by members: cipher suite, commit rules and
//! the identity provider that maps a credential to an overlay address.

use mls_rs::client_builder::{BaseConfig, WithCryptoProvider, WithIdentityProvider};
use mls_rs::identity::basic::BasicCredential;
use mls_rs::identity::{CredentialType, SigningIdentity};
use mls_rs::mls_rules::{CommitOptions, DefaultMlsRules};
use mls_rs::time::MlsTime;
use mls_rs::{CipherSuite, ExtensionList, IdentityProvider};
use mls_rs_core::identity::MemberValidationContext;
use mls_rs_crypto_rustcrypto::RustCryptoProvider;

use crate::MAX_ADDRESS_LEN;

/// The one cipher suite in use (id [`crate::CIPHER_SUITE`]).
pub(crate) const SUITE: CipherSuite = CipherSuite::CURVE25519_CHACHA;

/// The mls-rs client configuration type: in-memory storage (states are taken out of
/// it by `save`), our identity provider, our rules, the RustCrypto provider.
pub(crate) type Config = WithIdentityProvider<
    AddressIdentity,
    WithCryptoProvider<
        RustCryptoProvider,
        mls_rs::client_builder::WithMlsRules<DefaultMlsRules, BaseConfig>,
    >,
>;

/// The crypto provider, restricted to [`SUITE`].
pub(crate) fn crypto() -> RustCryptoProvider {
    RustCryptoProvider::with_enabled_cipher_suites(vec![SUITE])
}

/// Commit rules: every commit carries an update path; Welcomes carry the ratchet tree
/// and there is one Welcome for all members a commit adds.
pub(crate) fn rules() -> DefaultMlsRules {
    DefaultMlsRules::new().with_commit_options(
        CommitOptions::new()
            .with_path_required(true)
            .with_ratchet_tree_extension(true)
            .with_single_welcome_message(true)
            .with_allow_external_commit(false),
    )
}

/// Checks that `identity` is an acceptable member address and returns it as text.
pub(crate) fn check_address(identity: &[u8]) -> Result<&str, &'static str> {
    if identity.is_empty() || identity.len() > MAX_ADDRESS_LEN {
        return Err("address must be 1 to 128 bytes");
    }
    if !identity.iter().all(u8::is_ascii_graphic) {
        return Err("address must be printable ASCII without spaces");
    }
    std::str::from_utf8(identity).map_err(|_| "address must be ASCII")
}

/// The address named by a signing identity's credential.
pub(crate) fn address_of(identity: &SigningIdentity) -> Result<&str, IdentityError> {
    let basic = identity
        .credential
        .as_basic()
        .ok_or(IdentityError("credential is not a basic credential"))?;
    check_address(basic.identifier()).map_err(IdentityError)
}

/// An identity the [`AddressIdentity`] provider refuses.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct IdentityError(&'static str);

impl mls_rs::error::IntoAnyError for IdentityError {
    fn into_dyn_error(self) -> Result<Box<dyn std::error::Error + Send + Sync>, Self> {
        Ok(self.into())
    }
}

/// Identity provider: a member's identity is the address in its basic credential.
/// Any other credential, or an address that [`check_address`] refuses, is invalid.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AddressIdentity;

impl IdentityProvider for AddressIdentity {
    type Error = IdentityError;

    fn validate_member(
        &self,
        signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _context: MemberValidationContext<'_>,
    ) -> Result<(), Self::Error> {
        address_of(signing_identity).map(|_| ())
    }

    fn validate_external_sender(
        &self,
        _signing_identity: &SigningIdentity,
        _timestamp: Option<MlsTime>,
        _extensions: Option<&ExtensionList>,
    ) -> Result<(), Self::Error> {
        Err(IdentityError("external senders are not accepted"))
    }

    fn identity(
        &self,
        signing_identity: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<Vec<u8>, Self::Error> {
        address_of(signing_identity).map(|a| a.as_bytes().to_vec())
    }

    fn valid_successor(
        &self,
        predecessor: &SigningIdentity,
        successor: &SigningIdentity,
        _extensions: &ExtensionList,
    ) -> Result<bool, Self::Error> {
        Ok(address_of(predecessor)? == address_of(successor)?)
    }

    fn supported_types(&self) -> Vec<CredentialType> {
        vec![BasicCredential::credential_type()]
    }
}
