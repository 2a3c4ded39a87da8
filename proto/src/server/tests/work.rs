//! Hash jobs run with a reused [`Scratch`]: the same hashes as a fresh
//! allocation, whatever the order of the jobs' parameters, with one buffer
//! that grows to the largest need and is given back on release.

use argon2::{Algorithm, Argon2, Params, Version};
use zeroize::Zeroizing;

use super::super::work::HashTask;
use super::{HashParams, Job};
use crate::server::{JobId, Scratch};

fn job(id: u64, params: &[HashParams]) -> Job {
    let tasks = params
        .iter()
        .enumerate()
        .map(|(i, &params)| HashTask {
            secret: Zeroizing::new(format!("secret {id} {i}").into_bytes()),
            salt: [u8::try_from(i).expect("small"); 16],
            params,
        })
        .collect();
    Job { id: JobId(id), tasks }
}

/// argon2id with its own allocation: the reference.
fn reference(job: &Job) -> Vec<[u8; 32]> {
    job.tasks
        .iter()
        .map(|t| {
            let p = t.params;
            let params = Params::new(p.m_cost_kib, p.t_cost, p.p_cost, Some(32)).expect("params");
            let mut out = [0u8; 32];
            Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password_into(&t.secret, &t.salt, &mut out)
                .expect("hash");
            out
        })
        .collect()
}

const SMALL: HashParams = HashParams { m_cost_kib: 64, t_cost: 1, p_cost: 1 };
const LARGE: HashParams = HashParams { m_cost_kib: 512, t_cost: 2, p_cost: 1 };
const LANES: HashParams = HashParams { m_cost_kib: 256, t_cost: 1, p_cost: 2 };

#[test]
fn a_reused_scratch_gives_the_same_hashes_in_any_order_of_parameters() {
    let jobs = [
        job(1, &[SMALL, SMALL]),
        job(2, &[LARGE]),
        job(3, &[SMALL]),
        job(4, &[LANES, HashParams::INSECURE_FAST]),
        job(5, &[LARGE, SMALL]),
    ];
    let mut scratch = Scratch::new();
    for j in &jobs {
        let expected = reference(j);
        assert_eq!(j.run_with(&mut scratch).hashes, Some(expected.clone()), "job {:?} with the scratch", j.id);
        assert_eq!(j.run().hashes, Some(expected), "job {:?} alone", j.id);
    }
}

#[test]
fn a_scratch_grows_to_the_largest_need_and_release_empties_it() {
    let mut scratch = Scratch::new();
    assert_eq!(scratch.held_kib(), 0);
    let _ = job(1, &[SMALL]).run_with(&mut scratch);
    assert_eq!(scratch.held_kib(), 64);
    let _ = job(2, &[LARGE, SMALL]).run_with(&mut scratch);
    assert_eq!(scratch.held_kib(), 512, "grown to the largest hash of the job");
    let _ = job(3, &[SMALL]).run_with(&mut scratch);
    assert_eq!(scratch.held_kib(), 512, "kept for the next job");
    scratch.release();
    assert_eq!(scratch.held_kib(), 0);

    // A reserving scratch touches only what a hash needs.
    let mut reserving = Scratch::reserving(4096);
    let j = job(4, &[SMALL]);
    assert_eq!(j.run_with(&mut reserving).hashes, Some(reference(&j)));
    assert_eq!(reserving.held_kib(), 64);
    let j = job(5, &[LARGE]);
    assert_eq!(j.run_with(&mut reserving).hashes, Some(reference(&j)));
    assert_eq!(reserving.held_kib(), 512);
}

#[test]
fn parameters_argon2_refuses_fail_the_job_and_leave_the_scratch_as_it_was() {
    let mut scratch = Scratch::new();
    let _ = job(1, &[SMALL]).run_with(&mut scratch);
    let refused = HashParams { m_cost_kib: 64, t_cost: 0, p_cost: 1 };
    assert_eq!(job(2, &[refused]).run_with(&mut scratch).hashes, None);
    assert_eq!(scratch.held_kib(), 64);
}
