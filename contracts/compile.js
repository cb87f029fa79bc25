#!/usr/bin/env node
// Compile MetanetRegistry.sol with the pinned solc-js and write the artifact
// (ABI, creation and runtime bytecode, immutable offsets) as stable JSON.
//
//   node compile.js [OUT]    default OUT: artifacts/MetanetRegistry.json
//
// The settings below are part of the artifact: changing them changes the bytecode.
// Metadata hashing is off, so comment-only edits leave the bytecode unchanged.
'use strict';

const fs = require('fs');
const path = require('path');
const solc = require('solc');

const SOURCE = 'MetanetRegistry.sol';
const CONTRACT = 'MetanetRegistry';
const PINNED = require('./package.json').devDependencies.solc;

const settings = {
  optimizer: { enabled: true, runs: 200 },
  evmVersion: 'cancun',
  metadata: { bytecodeHash: 'none', appendCBOR: false },
  outputSelection: {
    [SOURCE]: {
      [CONTRACT]: ['abi', 'evm.methodIdentifiers', 'evm.bytecode.object', 'evm.deployedBytecode.object', 'evm.deployedBytecode.immutableReferences'],
    },
  },
};

function main() {
  const out = process.argv[2] || path.join(__dirname, 'artifacts', `${CONTRACT}.json`);
  const version = solc.version();
  if (!version.startsWith(`${PINNED}+`)) {
    throw new Error(`solc ${version} is installed but ${PINNED} is pinned: run npm ci in contracts/`);
  }
  const input = {
    language: 'Solidity',
    sources: { [SOURCE]: { content: fs.readFileSync(path.join(__dirname, SOURCE), 'utf8') } },
    settings,
  };
  const result = JSON.parse(solc.compile(JSON.stringify(input)));
  const problems = (result.errors || []).filter((e) => e.severity !== 'info');
  for (const e of problems) {
    process.stderr.write(e.formattedMessage);
  }
  if (problems.some((e) => e.severity === 'error') || problems.length > 0) {
    throw new Error('compilation produced errors or warnings');
  }
  const c = result.contracts[SOURCE][CONTRACT];
  // Immutable references as a flat, sorted list of {start, length}: the byte ranges
  // of the runtime code that the constructor fills in.
  const immutables = Object.values(c.evm.deployedBytecode.immutableReferences || {})
    .flat()
    .sort((a, b) => a.start - b.start)
    .map(({ start, length }) => ({ start, length }));
  const artifact = {
    contractName: CONTRACT,
    sourceName: SOURCE,
    compiler: { name: 'solc-js', version, settings: { optimizer: settings.optimizer, evmVersion: settings.evmVersion, metadata: settings.metadata } },
    abi: c.abi,
    methodIdentifiers: c.evm.methodIdentifiers,
    bytecode: `0x${c.evm.bytecode.object}`,
    deployedBytecode: `0x${c.evm.deployedBytecode.object}`,
    immutableReferences: immutables,
  };
  fs.mkdirSync(path.dirname(out), { recursive: true });
  fs.writeFileSync(out, `${JSON.stringify(artifact, null, 2)}\n`);
}

try {
  main();
} catch (e) {
  process.stderr.write(`compile.js: ${e.message}\n`);
  process.exit(1);
}
