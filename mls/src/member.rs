//! One identity's MLS client: its signer, its key packages, and the groups it makes,
//! joins and loads.

use std::fmt;

use mls_rs::client_builder::ClientBuilder;
use mls_rs::crypto::{SignaturePublicKey, SignatureSecretKey};
use mls_rs::external_client::ExternalClient;
use mls_rs::identity::basic::BasicCredential;
use mls_rs::identity::SigningIdentity;
use mls_rs::mls_rs_codec::{MlsDecode, MlsEncode};
use mls_rs::storage_provider::in_memory::{InMemoryGroupStateStorage, InMemoryKeyPackageStorage};
use mls_rs::time::MlsTime;
use mls_rs::{Client, GroupStateStorage, MlsMessage, ProtocolVersion, WireFormat};
use mls_rs_core::group::GroupState;
use mls_rs_core::key_package::KeyPackageData;
use zeroize::Zeroizing;

use crate::codec::{self, Reader};
use crate::config::{self, AddressIdentity, Config, SUITE};
use crate::group::{guard, Group};
use crate::Error;

/// One identity's MLS client.
///
/// `address` is the identity's overlay address (e.g. `"mn1qq..."`), used verbatim as
/// the MLS `BasicCredential` identity. `seed` is 32 secret bytes from which the MLS
/// Ed25519 signature key is derived deterministically
/// (`blake3::derive_key("metanet v1 mls signature", seed)` is the Ed25519 secret key),
/// so restarting with the same seed gives the same signer without storing it. The seed
/// also keys the authentication of saved states.
///
/// A `Member` keeps the secrets of the key packages it made ([`Member::key_package`])
/// until one is used to [`join`](Member::join); [`Member::save`] writes those that are
/// neither used nor expired.
pub struct Member {
    address: String,
    signer: SignatureSecretKey,
    identity: SigningIdentity,
    key_packages: InMemoryKeyPackageStorage,
    state_key: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("address", &self.address)
            .field("key_packages", &self.key_packages.key_packages().len())
            .finish_non_exhaustive()
    }
}

/// The MLS signer and its public key for `seed`.
fn signer_of(seed: &[u8; 32]) -> (SignatureSecretKey, SignaturePublicKey) {
    let secret = Zeroizing::new(blake3::derive_key("metanet v1 mls signature", seed));
    let key = ed25519_dalek::SigningKey::from_bytes(&secret);
    // The RustCrypto provider's Ed25519 secret key format is secret || public.
    let pair = Zeroizing::new(key.to_keypair_bytes());
    (
        SignatureSecretKey::new_slice(&pair[..]),
        SignaturePublicKey::new_slice(key.verifying_key().as_bytes()),
    )
}

impl Member {
    /// The client of `address` with signer from `seed`. Fails if `address` is not an
    /// acceptable member identity (1 to [`crate::MAX_ADDRESS_LEN`] bytes of printable
    /// ASCII).
    pub fn new(address: &str, seed: &[u8; 32]) -> Result<Member, Error> {
        config::check_address(address.as_bytes())
            .map_err(|e| Error::Invalid(format!("address {address:?}: {e}")))?;
        let (signer, public) = signer_of(seed);
        let credential = BasicCredential::new(address.as_bytes().to_vec()).into_credential();
        Ok(Member {
            address: address.to_owned(),
            signer,
            identity: SigningIdentity::new(credential, public),
            key_packages: InMemoryKeyPackageStorage::new(),
            state_key: codec::state_key(seed),
        })
    }

    /// The identity's address, as given to [`Member::new`].
    pub fn address(&self) -> &str {
        &self.address
    }

    /// An mls-rs client of this identity whose groups store their state in `storage`.
    fn client(&self, storage: InMemoryGroupStateStorage) -> Client<Config> {
        ClientBuilder::new()
            .mls_rules(config::rules())
            .crypto_provider(config::crypto())
            .identity_provider(AddressIdentity)
            .key_package_repo(self.key_packages.clone())
            .group_state_storage(storage)
            .signing_identity(self.identity.clone(), self.signer.clone(), SUITE)
            .build()
    }

    /// Wraps an mls-rs group of ours after checking its own leaf is this identity.
    fn wrap(
        &self,
        group: mls_rs::Group<Config>,
        storage: InMemoryGroupStateStorage,
    ) -> Result<Group, Error> {
        if group.current_member_signing_identity()? != &self.identity {
            return Err(Error::NotMember);
        }
        Ok(Group::new(
            group,
            storage,
            self.address.clone(),
            self.state_key.clone(),
        ))
    }

    /// A fresh serialized KeyPackage (an MLSMessage) others use to add us; valid for a
    /// year. Its secrets stay in this `Member` until a Welcome uses them.
    pub fn key_package(&mut self) -> Result<Vec<u8>, Error> {
        let client = self.client(InMemoryGroupStateStorage::new());
        let message =
            client.generate_key_package_message(Default::default(), Default::default(), None)?;
        Ok(message.to_bytes()?)
    }

    /// Creates a new group named `group_id` (arbitrary, non-empty bytes: the group's
    /// name). We are its only member; its epoch is 0.
    pub fn create(&mut self, group_id: &[u8]) -> Result<Group, Error> {
        if group_id.is_empty() {
            return Err(Error::Invalid("empty group id".into()));
        }
        let storage = InMemoryGroupStateStorage::new();
        let group = self
            .client(storage.clone())
            .group_builder()?
            .with_group_id(group_id.to_vec())
            .build()?;
        self.wrap(group, storage)
    }

    /// Joins a group from a Welcome (the bytes of [`crate::Commit::welcome`]). Needs the
    /// secrets of one of the key packages this `Member` made; that key package is then
    /// used up and forgotten. [`Error::NotMember`] if the Welcome is for none of ours.
    pub fn join(&mut self, welcome: &[u8]) -> Result<Group, Error> {
        let message = MlsMessage::from_bytes(welcome)?;
        if message.wire_format() != WireFormat::Welcome {
            return Err(Error::Decode("not a Welcome".into()));
        }
        let storage = InMemoryGroupStateStorage::new();
        let client = self.client(storage.clone());
        let (mut group, _) = guard(|| client.join_group(None, &message, None))??;
        // Writing the state drops the used key package's secrets from our store; the
        // written copy of the state is dropped at once.
        group.write_to_storage()?;
        storage.delete_group(group.group_id());
        self.wrap(group, storage)
    }

    /// Everything needed to [`restore`](Member::restore) this `Member` besides its
    /// address and seed: the secrets of its key packages not yet used nor expired.
    /// Authenticated with a key derived from the seed. Contains secrets: store it as
    /// such. Groups are saved separately ([`Group::save`]).
    pub fn save(&self) -> Result<Vec<u8>, Error> {
        let now = MlsTime::now().seconds_since_epoch();
        let mut body = Zeroizing::new(Vec::new());
        for (id, data) in self.key_packages.key_packages() {
            if data.expiration <= now {
                continue;
            }
            codec::put_bytes(&mut body, &id)?;
            let data = Zeroizing::new(
                data.mls_encode_to_vec()
                    .map_err(|e| Error::Mls(format!("encoding key package secrets: {e}")))?,
            );
            codec::put_bytes(&mut body, &data)?;
        }
        Ok(codec::seal(
            &self.state_key,
            &codec::MEMBER_MAGIC,
            &self.address,
            &body,
        ))
    }

    /// The `Member` that [`Member::save`] saved, for the same address and seed.
    pub fn restore(address: &str, seed: &[u8; 32], saved: &[u8]) -> Result<Member, Error> {
        let member = Member::new(address, seed)?;
        let body = codec::open(
            &member.state_key,
            &codec::MEMBER_MAGIC,
            &member.address,
            saved,
        )?;
        let mut r = Reader::new(body);
        while !r.is_empty() {
            let id = r.bytes()?;
            let mut data = r.bytes()?;
            let data = KeyPackageData::mls_decode(&mut data)
                .map_err(|e| Error::Decode(format!("key package secrets: {e}")))?;
            member.key_packages.insert(id.to_vec(), data);
        }
        r.finish()?;
        Ok(member)
    }

    /// The group that [`Group::save`] saved (made by this identity).
    pub fn load_group(&mut self, saved: &[u8]) -> Result<Group, Error> {
        let body = codec::open(&self.state_key, &codec::GROUP_MAGIC, &self.address, saved)?;
        let mut r = Reader::new(body);
        let group_id = r.bytes()?;
        let state = r.bytes()?;
        r.finish()?;
        let mut storage = InMemoryGroupStateStorage::new();
        let written = storage.write(
            GroupState {
                id: group_id.to_vec(),
                data: Zeroizing::new(state.to_vec()),
            },
            Vec::new(),
            Vec::new(),
        );
        match written {
            Ok(()) => {}
            Err(never) => match never {},
        }
        let loaded = guard(|| self.client(storage.clone()).load_group(group_id));
        storage.delete_group(group_id);
        let group = loaded??;
        if group.group_id() != group_id {
            return Err(Error::Decode("saved group id mismatch".into()));
        }
        self.wrap(group, storage)
    }
}

/// The address named by a key package's credential, after checking that the key
/// package decodes, its signatures verify, its cipher suite is ours
/// ([`crate::CIPHER_SUITE`]), its protocol version is MLS 1.0, it has not expired and
/// its credential is an acceptable address. Admins call this before adding.
pub fn key_package_address(kp: &[u8]) -> Result<String, Error> {
    let message = MlsMessage::from_bytes(kp)?;
    if message.wire_format() != WireFormat::KeyPackage {
        return Err(Error::Decode("not a KeyPackage".into()));
    }
    match message.cipher_suite() {
        Some(cs) if cs == SUITE => {}
        Some(cs) => {
            return Err(Error::Invalid(format!(
                "cipher suite {} is not ours",
                u16::from(cs)
            )))
        }
        None => return Err(Error::Decode("not a KeyPackage".into())),
    }
    let validator = ExternalClient::builder()
        .crypto_provider(config::crypto())
        .identity_provider(AddressIdentity)
        .build();
    let package = guard(|| validator.validate_key_package(message, None))??;
    if package.version != ProtocolVersion::MLS_10 {
        return Err(Error::Invalid("protocol version is not MLS 1.0".into()));
    }
    config::address_of(package.signing_identity())
        .map(str::to_owned)
        .map_err(|e| Error::Invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signer_is_deterministic() {
        let (a, pa) = signer_of(&[1; 32]);
        let (b, pb) = signer_of(&[1; 32]);
        let (_, pc) = signer_of(&[2; 32]);
        assert_eq!(a.as_bytes(), b.as_bytes());
        assert_eq!(pa, pb);
        assert_ne!(pa, pc);
        assert_eq!(a.as_bytes().len(), 64);
    }

    #[test]
    fn bad_addresses() {
        for a in ["", "has space", "tab\t", "ünï"] {
            assert!(
                matches!(Member::new(a, &[0; 32]), Err(Error::Invalid(_))),
                "{a:?}"
            );
        }
        let long = "m".repeat(crate::MAX_ADDRESS_LEN + 1);
        assert!(Member::new(&long, &[0; 32]).is_err());
        assert!(Member::new(&long[1..], &[0; 32]).is_ok());
    }
}
