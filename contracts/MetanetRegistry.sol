// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity 0.8.37;

/// @title metanet chain registry
/// @notice An ordered, append-only log of ed25519-signed metanet claims: name commits
/// and reveals, name transfers, key rotations and key revocations.
/// @dev The EVM cannot verify ed25519, so this contract does not look inside a claim:
/// it only gives every claim a place in one total order (a monotonically increasing
/// index) and emits it. Every resolver replays the `Claim` events in index order and
/// applies the rules of docs/protocol.md §9, which is what makes all resolvers agree.
/// A claim that is malformed, badly signed or not allowed is ignored by resolvers,
/// so anyone may submit anything; whoever submits pays the gas. Nothing is kept in
/// storage but the claim counter, to keep a submission cheap.
contract MetanetRegistry {
    /// @notice Claims longer than this many bytes are refused (docs/protocol.md §9.2).
    uint256 public constant MAX_CLAIM_LEN = 1024;

    /// @notice Minimum number of blocks between a name commit and its reveal
    /// (docs/protocol.md §9.5). Fixed at deployment so that all resolvers use one value.
    uint64 public immutable minRevealDelay;

    /// @notice Number of blocks after its commit during which a reveal may use it
    /// (docs/protocol.md §9.5).
    uint64 public immutable commitLifetime;

    /// @notice Number of claims accepted so far, which is the index of the next one.
    uint64 public count;

    /// @notice One claim, in log order: `index` counts from 0 without gaps.
    event Claim(uint64 indexed index, bytes claim);

    /// @notice The claim is longer than MAX_CLAIM_LEN.
    error ClaimTooLong(uint256 length);

    /// @notice Deployment parameters must satisfy 0 < minRevealDelay < commitLifetime.
    error BadParameters();

    constructor(uint64 minRevealDelay_, uint64 commitLifetime_) {
        if (minRevealDelay_ == 0 || commitLifetime_ <= minRevealDelay_) {
            revert BadParameters();
        }
        minRevealDelay = minRevealDelay_;
        commitLifetime = commitLifetime_;
    }

    /// @notice Append `claim` to the log.
    function submit(bytes calldata claim) external {
        if (claim.length > MAX_CLAIM_LEN) {
            revert ClaimTooLong(claim.length);
        }
        uint64 index = count;
        // 2^64 claims cannot be paid for; wrapping is unreachable.
        unchecked {
            count = index + 1;
        }
        emit Claim(index, claim);
    }
}
