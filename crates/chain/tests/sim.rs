//! Four validators on commonware's deterministic runtime and simulated network, running the
//! real ledger: finality with transactions, a crashed validator, a partition that heals, and
//! a restart from disk. Every run is reproducible from its seed.

use commonware_cryptography::Signer;
use commonware_p2p::simulated::{self, Link, Network, Oracle};
use commonware_runtime::{deterministic, Clock, Handle, Quota, Runner, Spawner, Supervisor};
use commonware_utils::{NZUsize, NZU32};
use deai_chain::node::{self, Channels, Node, NodeConfig};
use deai_chain::{FinalizedBlock, Mempool};
use deai_ledger::*;
use deai_types::Hash256;
use ed25519_dalek::SigningKey;
use futures::channel::oneshot;
use std::time::Duration;

type PublicKey = commonware_cryptography::ed25519::PublicKey;
const N: u8 = 4;
/// Short epochs, so that every test below also crosses several epoch changes.
const EPOCH_LENGTH: u64 = 8;
const QUOTA: Quota = Quota::per_second(NZU32!(10_000));

fn seed(i: u8) -> [u8; 32] {
    [i + 1; 32]
}
fn addr(i: u8) -> Address {
    SigningKey::from_bytes(&seed(i)).verifying_key().to_bytes()
}
const CLIENT: u8 = 50;
/// Not a genesis validator: funded, and a p2p peer of the simulated network, but it must
/// stake and register to join the consensus set.
const JOINER: u8 = N;

fn genesis_state() -> State {
    let mut accounts: Vec<GenesisAccount> = (0..N)
        .map(|i| GenesisAccount {
            address: addr(i),
            balance: 1_000_000,
            stake: 100_000,
        })
        .collect();
    for who in [CLIENT, JOINER] {
        accounts.push(GenesisAccount {
            address: addr(who),
            balance: 1_000_000,
            stake: 0,
        });
    }
    State::from_genesis(&Genesis {
        chain_name: "sim".into(),
        accounts,
        validators: (0..N)
            .map(|i| GenesisValidator {
                address: addr(i),
                endpoint: String::new(),
                p2p: String::new(),
            })
            .collect(),
        params: Params::default(),
        epoch_length: EPOCH_LENGTH,
        beacon: None,
        royalties: Vec::new(),
    })
    .unwrap()
}

fn transfer(chain: Hash256, nonce: u64, amount: u64) -> SignedTx {
    Tx {
        chain,
        from: [0; 32],
        nonce,
        fee: 1,
        kind: TxKind::Transfer {
            to: addr(0),
            amount,
        },
    }
    .sign(&SigningKey::from_bytes(&seed(CLIENT)))
}

fn link() -> Link {
    Link {
        latency: Duration::from_millis(10),
        jitter: Duration::from_millis(3),
        success_rate: commonware_utils::probability!(1.0),
    }
}

fn pk(i: u8) -> PublicKey {
    node::private_key(&seed(i)).public_key()
}

async fn network(ctx: &deterministic::Context) -> Oracle<PublicKey, deterministic::Context> {
    let (net, oracle) = Network::new_with_peers(
        ctx.child("network"),
        simulated::Config {
            max_size: 4 * 1024 * 1024,
            max_peers_per_set: NZUsize!(N as usize + 1),
            disconnect_on_block: true,
            tracked_peer_sets: NZUsize!(1),
        },
        (0..=JOINER).map(pk).collect::<Vec<_>>(),
    )
    .await;
    net.start();
    oracle
}

async fn link_all(oracle: &Oracle<PublicKey, deterministic::Context>, l: Link) {
    for a in 0..N {
        for b in 0..N {
            if a != b {
                let _ = oracle.add_link(pk(a), pk(b), l.clone()).await;
            }
        }
    }
}

async fn isolate(oracle: &Oracle<PublicKey, deterministic::Context>, i: u8) {
    for j in 0..N {
        if j != i {
            let _ = oracle.remove_link(pk(i), pk(j)).await;
            let _ = oracle.remove_link(pk(j), pk(i)).await;
        }
    }
}

async fn spawn_validator(
    ctx: &deterministic::Context,
    oracle: &Oracle<PublicKey, deterministic::Context>,
    i: u8,
    incarnation: u32,
) -> (Handle<()>, Node) {
    let (tx, rx) = oneshot::channel();
    let oracle = oracle.clone();
    let handle = ctx
        .child("validator")
        .with_attribute("index", i)
        .with_attribute("incarnation", incarnation)
        .spawn(move |ctx| async move {
            let signer = node::private_key(&seed(i));
            let control = oracle.control(signer.public_key());
            let mut reg = Vec::new();
            for ch in node::CHANNELS {
                reg.push(control.register(ch, QUOTA).await.expect("register"));
            }
            let mut reg = reg.into_iter();
            let channels = Channels {
                votes: reg.next().unwrap(),
                certs: reg.next().unwrap(),
                resolver: reg.next().unwrap(),
                backfill: reg.next().unwrap(),
                broadcast: reg.next().unwrap(),
            };
            let genesis = genesis_state();
            let n = node::start_node(
                ctx,
                NodeConfig {
                    signer,
                    partition: format!("validator-{i}"),
                    genesis_state: genesis,
                    mempool: Mempool::new(10_000, 1_000),
                    max_block_txs: 1_000,
                    leader_timeout: Duration::from_secs(1),
                    on_epoch: None,
                },
                channels,
                oracle.manager(),
                control,
            )
            .await;
            let _ = tx.send(n);
            futures::future::pending::<()>().await;
        });
    (handle, rx.await.expect("validator started"))
}

async fn wait_height(ctx: &deterministic::Context, nodes: &[&Node], h: u64) {
    while !nodes.iter().all(|n| n.app.finalized_height() >= h) {
        ctx.sleep(Duration::from_millis(100)).await;
    }
}

/// All nodes hold identical finalized blocks (digests, txs, outcomes, roots) up to `h`.
fn assert_agree(nodes: &[&Node], h: u64) -> Vec<FinalizedBlock> {
    let reference = nodes[0].app.blocks(0, h + 1);
    assert_eq!(reference.len() as u64, h + 1);
    for (i, b) in reference.iter().enumerate() {
        assert_eq!(b.header.height, i as u64);
    }
    for n in nodes {
        assert_eq!(n.app.blocks(0, h + 1), reference);
    }
    reference
}

#[test]
fn four_validators_finalize_ledger_transactions() {
    deterministic::Runner::timed(Duration::from_secs(120)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        link_all(&oracle, link()).await;
        let mut nodes = Vec::new();
        for i in 0..N {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        let chain = nodes[0].1.app.finalized_state().chain_id();
        // Twelve transfers, spread over the validators' mempools in nonce order per node.
        let txs: Vec<SignedTx> = (0..12).map(|n| transfer(chain, n, 10 + n)).collect();
        for t in &txs {
            nodes[0].1.app.submit(t.clone()).unwrap();
        }
        // A replayed or forged transaction is refused at the door.
        assert!(nodes[0].1.app.submit(txs[0].clone()).is_err());
        let mut forged = transfer(chain, 12, 5);
        forged.sig[3] ^= 1;
        assert!(nodes[0].1.app.submit(forged).is_err());
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        wait_height(&ctx, &refs, 15).await;
        let log = assert_agree(&refs, 15);
        let included: usize = log.iter().map(|b| b.txs.len()).sum();
        assert_eq!(included, 12, "each transaction finalized exactly once");
        for t in &txs {
            let (_, outcome) = refs[1].app.tx_status(&t.id()).expect("finalized");
            assert_eq!(outcome.error, None);
        }
        let s = refs[2].app.finalized_state();
        let sent: u64 = (0..12).map(|n| 10 + n).sum();
        assert_eq!(s.account(&addr(CLIENT)).balance, 1_000_000 - sent - 12);
        assert_eq!(s.account(&addr(CLIENT)).nonce, 12);
        s.audit().unwrap();
        // Headers commit to the state root each node computed itself.
        assert_eq!(
            log[15].header.state_root,
            refs[3].app.blocks(15, 16)[0].header.state_root
        );
    });
}

#[test]
fn one_crashed_validator_of_four_does_not_stop_finality() {
    deterministic::Runner::timed(Duration::from_secs(300)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        link_all(&oracle, link()).await;
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        wait_height(&ctx, &refs, 15).await;
        assert_agree(&refs, 15);
    });
}

#[test]
fn lossy_links_and_a_healed_partition_converge() {
    deterministic::Runner::timed(Duration::from_secs(600)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        // 10 % loss, 50 ms +- 40 ms latency (reordering).
        let lossy = Link {
            latency: Duration::from_millis(50),
            jitter: Duration::from_millis(40),
            success_rate: commonware_utils::probability!(0.9),
        };
        link_all(&oracle, lossy.clone()).await;
        let mut nodes = Vec::new();
        for i in 0..N {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        let chain = nodes[0].1.app.finalized_state().chain_id();
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        wait_height(&ctx, &refs, 3).await;
        isolate(&oracle, 3).await;
        // Transactions keep finalizing without validator 3.
        for n in 0..5 {
            refs[1].app.submit(transfer(chain, n, 1)).unwrap();
        }
        let stuck = refs[3].app.finalized_height();
        wait_height(&ctx, &refs[..3], stuck + 20).await;
        assert!(refs[3].app.finalized_height() <= stuck + 1);
        link_all(&oracle, lossy).await;
        let target = refs[0].app.finalized_height();
        wait_height(&ctx, &refs, target).await;
        assert_agree(&refs, target);
        assert_eq!(
            refs[3].app.finalized_state().account(&addr(CLIENT)).nonce,
            5
        );
    });
}

#[test]
fn a_restarted_validator_recovers_its_finalized_state_from_disk() {
    deterministic::Runner::timed(Duration::from_secs(300)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        link_all(&oracle, link()).await;
        let mut nodes = Vec::new();
        for i in 0..N {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        let chain = nodes[0].1.app.finalized_state().chain_id();
        for n in 0..6 {
            nodes[3].1.app.submit(transfer(chain, n, 2)).unwrap();
        }
        {
            let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
            wait_height(&ctx, &refs, 10).await;
        }
        let (handle, old) = nodes.pop().unwrap();
        handle.abort();
        let _ = handle.await;
        // Read once every task of the node has stopped (its finalizer may still apply a block
        // while the abort is under way).
        let before_root = old.app.finalized_state().root();
        let before_h = old.app.finalized_height();
        drop(old);
        ctx.sleep(Duration::from_secs(3)).await;
        let (h2, restarted) = spawn_validator(&ctx, &oracle, 3, 1).await;
        // Replayed from its own archive before talking to anyone.
        let replayed = restarted.app.finalized_height();
        assert!(
            replayed > 0 && replayed <= before_h,
            "replayed {replayed} of {before_h}"
        );
        if replayed == before_h {
            assert_eq!(restarted.app.finalized_state().root(), before_root);
        }
        nodes.push((h2, restarted));
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        let target = refs[0].app.finalized_height() + 5;
        wait_height(&ctx, &refs, target).await;
        assert_agree(&refs, target);
        assert_eq!(
            refs[3].app.finalized_state().account(&addr(CLIENT)).nonce,
            6
        );
    });
}

#[test]
fn a_proposer_with_a_wrong_state_root_is_outvoted() {
    deterministic::Runner::timed(Duration::from_secs(300)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        link_all(&oracle, link()).await;
        let mut nodes = Vec::new();
        for i in 0..N {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        nodes[0].1.app.inject_bad_proposals(true);
        let chain = nodes[0].1.app.finalized_state().chain_id();
        // Transactions sent to the faulty proposer's mempool never finalize through it, but
        // those sent to honest nodes do.
        for n in 0..4 {
            nodes[1].1.app.submit(transfer(chain, n, 3)).unwrap();
        }
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        wait_height(&ctx, &refs, 12).await;
        let log = assert_agree(&refs, 12);
        // Every finalized header's root is what honest execution gives (each node checked it
        // when applying); none came from the faulty proposer's corrupted blocks.
        let mut s = genesis_state();
        for b in &log[1..] {
            let r = s.apply_block(b.header.height, &b.txs).unwrap();
            assert_eq!(r.state_root, b.header.state_root);
        }
        assert_eq!(
            refs[2].app.finalized_state().account(&addr(CLIENT)).nonce,
            4
        );
    });
}

#[test]
fn an_equivocating_validator_cannot_split_finality_and_leaves_evidence() {
    use commonware_consensus::simplex::mocks::conflicter::{Config, Conflicter};
    deterministic::Runner::timed(Duration::from_secs(300)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        link_all(&oracle, link()).await;
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        // Validator 3 signs conflicting notarize/finalize votes for every proposal it sees.
        let signer = node::private_key(&seed(3));
        let control = oracle.control(signer.public_key());
        let (s, r) = control.register(node::CH_VOTES, QUOTA).await.unwrap();
        // Consensus channels are multiplexed by epoch: it equivocates in epoch 0.
        let (mux, mut handle) = commonware_p2p::utils::mux::Muxer::new(ctx.child("mux"), s, r);
        drop(mux.start());
        let votes = handle.register(0).await.unwrap();
        let scheme = deai_chain::app::Scheme::signer(
            node::NAMESPACE,
            node::participants(&genesis_state()),
            signer,
        )
        .unwrap();
        Conflicter::<_, _, commonware_cryptography::Sha256>::new(
            ctx.child("conflicter"),
            Config { scheme },
        )
        .start(votes);
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        wait_height(&ctx, &refs, 12).await;
        // Safety: the honest nodes finalized exactly the same blocks.
        assert_agree(&refs, 12);
        // The equivocation was detected and attributed to validator 3.
        let evidence: Vec<_> = refs.iter().flat_map(|n| n.evidence.evidence()).collect();
        assert!(!evidence.is_empty(), "no equivocation evidence recorded");
        assert!(
            evidence.iter().all(|e| e.offender == addr(3)),
            "{evidence:?}"
        );
        // The honest nodes reported it on chain and validator 3 was slashed: half of the
        // slash to a reporter, the rest burned, once per view.
        let stake0 = genesis_state().account(&addr(3)).stake;
        let mut h = 12;
        loop {
            let s = refs[0].app.finalized_state();
            let v = s.validator(&addr(3)).expect("validator 3").clone();
            if !v.slashed_views.is_empty() {
                assert!(v.slashed > 0);
                assert!(s.account(&addr(3)).stake < stake0);
                assert!(s.meta().burned > 0);
                let mut views = v.slashed_views.clone();
                views.dedup();
                assert_eq!(views, v.slashed_views, "a view slashed twice");
                s.audit().unwrap();
                break;
            }
            h += 5;
            assert!(h < 200, "validator 3 never slashed");
            wait_height(&ctx, &refs, h).await;
        }
        assert_agree(&refs, h);

        // The evidence check: the recorded evidence verifies; forged or misattributed
        // evidence is refused by the mempool (and would make a block invalid).
        let e = &evidence[0];
        let bytes = hex::decode(&e.encoded).unwrap();
        assert_eq!(e.epoch, 0);
        assert_eq!(Some(e.round), deai_chain::evidence::round_id(0, e.view));
        let check = deai_chain::evidence::EvidenceCheck::new(refs[0].app.epochs());
        check.check(&addr(3), e.round, &bytes, 0).unwrap();
        let err = check.check(&addr(2), e.round, &bytes, 0).unwrap_err();
        assert!(err.contains("not by the reported validator"), "{err}");
        let err = check.check(&addr(3), e.round + 1, &bytes, 0).unwrap_err();
        assert!(err.contains("not"), "{err}");
        let mut forged = bytes.clone();
        let last = forged.len() - 1;
        forged[last] ^= 1; // inside the second vote's signature
        let err = check.check(&addr(3), e.round, &forged, 0).unwrap_err();
        assert!(
            err.contains("do not verify") || err.contains("decode"),
            "{err}"
        );
        assert!(check.check(&addr(3), e.round, &[9, 9, 9], 0).is_err());
        let reporter = SigningKey::from_bytes(&seed(1));
        let s = refs[0].app.finalized_state();
        let tx = Tx {
            chain: s.chain_id(),
            from: addr(1),
            nonce: refs[0].app.next_nonce(&addr(1)),
            fee: s.params().min_fee,
            kind: TxKind::ReportEquivocation {
                offender: addr(3),
                view: e.round,
                evidence: forged,
            },
        }
        .sign(&reporter);
        let err = refs[0].app.submit(tx).unwrap_err().to_string();
        assert!(err.contains("evidence"), "{err}");
    });
}

#[test]
fn a_validator_that_joins_late_syncs_and_verifies_the_history() {
    deterministic::Runner::timed(Duration::from_secs(300)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        link_all(&oracle, link()).await;
        let mut nodes = Vec::new();
        for i in 0..3 {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        let chain = nodes[0].1.app.finalized_state().chain_id();
        for n in 0..5 {
            nodes[2].1.app.submit(transfer(chain, n, 4)).unwrap();
        }
        {
            let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
            wait_height(&ctx, &refs, 20).await;
        }
        // Validator 3 starts with empty storage: it must fetch and re-execute every block.
        nodes.push(spawn_validator(&ctx, &oracle, 3, 0).await);
        let refs: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        let target = refs[0].app.finalized_height() + 3;
        wait_height(&ctx, &refs, target).await;
        assert_agree(&refs, target);
        let s = refs[3].app.finalized_state();
        assert_eq!(s.account(&addr(CLIENT)).nonce, 5);
        s.audit().unwrap();
    });
}

fn signed(chain: Hash256, who: u8, nonce: u64, kind: TxKind) -> SignedTx {
    Tx {
        chain,
        from: addr(who),
        nonce,
        fee: 1,
        kind,
    }
    .sign(&SigningKey::from_bytes(&seed(who)))
}

#[test]
fn the_validator_set_follows_stake_from_one_epoch_to_the_next() {
    deterministic::Runner::timed(Duration::from_secs(600)).start(|ctx| async move {
        let oracle = network(&ctx).await;
        let everyone: Vec<u8> = (0..=JOINER).collect();
        for &a in &everyone {
            for &b in &everyone {
                if a != b {
                    oracle.add_link(pk(a), pk(b), link()).await.unwrap();
                }
            }
        }
        // Four genesis validators, and a fifth node that only follows (an observer) until
        // it has stake.
        let mut nodes = Vec::new();
        for i in 0..=JOINER {
            nodes.push(spawn_validator(&ctx, &oracle, i, 0).await);
        }
        let chain = nodes[0].1.app.finalized_state().chain_id();
        let min = nodes[0]
            .1
            .app
            .finalized_state()
            .params()
            .min_validator_stake;
        // The joiner stakes and registers; validator 0 unstakes everything.
        for t in [
            signed(chain, JOINER, 0, TxKind::Stake { amount: min }),
            signed(
                chain,
                JOINER,
                1,
                TxKind::RegisterValidator {
                    endpoint: "joiner".into(),
                    p2p: String::new(),
                },
            ),
            signed(chain, 0, 0, TxKind::Unstake { amount: 100_000 }),
        ] {
            nodes[1].1.app.submit(t).unwrap();
        }
        let all: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        // Wait for the epoch whose set is {1, 2, 3, joiner}.
        let new_set: Vec<PublicKey> = [1, 2, 3, JOINER].into_iter().map(pk).collect();
        let mut epoch = 0;
        while epoch == 0 {
            wait_height(&ctx, &all, all[0].app.finalized_height() + 1).await;
            let cur = all[4].epochs.current();
            if cur
                .participants
                .iter()
                .cloned()
                .collect::<Vec<_>>()
                .iter()
                .all(|k| new_set.contains(k))
                && cur.participants.len() == 4
            {
                epoch = cur.epoch;
            }
            assert!(all[0].app.finalized_height() < 100, "the set never changed");
        }
        let e = all[0].epochs.get(epoch).unwrap();
        assert_eq!(e.floor_height, (epoch * EPOCH_LENGTH) - 1);
        assert!(!e.participants.iter().any(|k| *k == pk(0)));
        // Every node, the removed validator included (now an observer), keeps finalizing.
        let target = e.floor_height + 2 * EPOCH_LENGTH;
        wait_height(&ctx, &all, target).await;
        assert_agree(&all, target);
        // A block of the new epoch carries a finality certificate of the new set, which the
        // genesis set cannot have produced.
        use commonware_consensus::Epochable;
        let mut cert = None;
        for h in (e.floor_height + 1..=target).rev() {
            let height = commonware_consensus::types::Height::new(h);
            if let Some(c) = all[2].marshal.get_finalization(height).await {
                cert = Some(c);
                break;
            }
        }
        let cert = cert.expect("a finality certificate in the new epoch");
        assert!(cert.epoch().get() >= epoch);
        let mut rng = commonware_utils::rng::TestRng::new(0);
        let set = all[2].epochs.get(cert.epoch().get()).unwrap();
        assert!(cert.verify(&mut rng, &*set.verifier, &commonware_parallel::Sequential));
        let genesis_verifier = deai_chain::app::Scheme::verifier(
            node::NAMESPACE,
            node::participants(&genesis_state()),
        );
        assert!(!cert.verify(
            &mut rng,
            &genesis_verifier,
            &commonware_parallel::Sequential
        ));
        // The joiner really votes: with validators 0 and 1 gone, only 2, 3 and the joiner
        // remain, a quorum of the new set (3 of 4) but not of the old one.
        let mut nodes = nodes;
        for _ in 0..2 {
            let (handle, _) = nodes.remove(0);
            handle.abort();
        }
        let rest: Vec<&Node> = nodes.iter().map(|(_, n)| n).collect();
        let target = rest[0].app.finalized_height() + EPOCH_LENGTH + 2;
        wait_height(&ctx, &rest, target).await;
        assert_agree(&rest, target);
        let s = rest[2].app.finalized_state();
        s.audit().unwrap();
        assert!(s.validator_set().contains(&addr(JOINER)));
        assert!(!s.validator_set().contains(&addr(0)));
    });
}
