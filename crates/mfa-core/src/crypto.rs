//! Secrets the domain mints and checks: password hashes (argon2id), bearer
//! tokens, numeric one-time codes and recovery codes. Pure computation over
//! the [`Randomness`] port.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};

use argon2::password_hash::phc::{Output, ParamsString, PasswordHash, Salt};
use argon2::{Argon2, Block};
use data_encoding::{BASE32_NOPAD, BASE64URL_NOPAD, HEXLOWER};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{MfaError, MfaResult};
use crate::ports::Randomness;

/// Shortest accepted password (NIST SP 800-63B: at least 8).
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest accepted password in bytes; bounds the work of one hash.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// argon2id cost parameters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PasswordParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Iterations.
    pub iterations: u32,
    /// Parallelism.
    pub parallelism: u32,
}

impl Default for PasswordParams {
    /// m = 7 MiB, t = 5, p = 1: one of the argon2id configurations OWASP's
    /// Password Storage Cheat Sheet lists as equivalent in the defence they
    /// provide (m = 19 MiB, t = 2 is another), and Keycloak's default. Of
    /// those it needs the least memory per concurrent hash, which is what a
    /// login storm multiplies, for about the same time per hash.
    fn default() -> Self {
        PasswordParams {
            memory_kib: 7 * 1024,
            iterations: 5,
            parallelism: 1,
        }
    }
}

impl PasswordParams {
    /// The weakest configuration accepted from an operator: OWASP's
    /// configurations have memory × iterations of at least 7 MiB × 5.
    pub const MIN_MEMORY_TIMES_ITERATIONS_KIB: u64 = 7 * 1024 * 5;
    /// Largest accepted memory: 1 GiB per hash.
    pub const MAX_MEMORY_KIB: u32 = 1024 * 1024;
    /// Largest accepted iteration count.
    pub const MAX_ITERATIONS: u32 = 100;
    /// Largest accepted parallelism.
    pub const MAX_PARALLELISM: u32 = 16;
}

impl fmt::Display for PasswordParams {
    /// The PHC parameter string: `m=7168,t=5,p=1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "m={},t={},p={}",
            self.memory_kib, self.iterations, self.parallelism
        )
    }
}

impl std::str::FromStr for PasswordParams {
    type Err = String;

    /// Parse `m=KIB,t=ITERATIONS,p=PARALLELISM` (any order, each once), as
    /// in a PHC string, and refuse configurations weaker than OWASP's.
    fn from_str(text: &str) -> Result<Self, String> {
        const EXPECTED: &str = "expected argon2id parameters such as m=7168,t=5,p=1 \
                                (memory in KiB, iterations, parallelism)";
        let (mut m, mut t, mut p) = (None, None, None);
        for part in text.trim().split(',') {
            let (key, value) = part.trim().split_once('=').ok_or(EXPECTED)?;
            let value: u32 = value.trim().parse().map_err(|_| EXPECTED)?;
            let slot = match key.trim() {
                "m" => &mut m,
                "t" => &mut t,
                "p" => &mut p,
                _ => return Err(EXPECTED.into()),
            };
            if slot.replace(value).is_some() {
                return Err(EXPECTED.into());
            }
        }
        let (Some(memory_kib), Some(iterations), Some(parallelism)) = (m, t, p) else {
            return Err(EXPECTED.into());
        };
        let params = PasswordParams {
            memory_kib,
            iterations,
            parallelism,
        };
        if !(1..=Self::MAX_PARALLELISM).contains(&parallelism) {
            return Err(format!("p must be 1 to {}", Self::MAX_PARALLELISM));
        }
        if !(1..=Self::MAX_ITERATIONS).contains(&iterations) {
            return Err(format!("t must be 1 to {}", Self::MAX_ITERATIONS));
        }
        if memory_kib > Self::MAX_MEMORY_KIB || memory_kib < 8 * parallelism {
            return Err(format!("m must be 8 × p to {} KiB", Self::MAX_MEMORY_KIB));
        }
        if u64::from(memory_kib) * u64::from(iterations) < Self::MIN_MEMORY_TIMES_ITERATIONS_KIB {
            return Err(format!(
                "{params} is weaker than OWASP's recommendations: m × t must be at least \
                 {} (m=7168,t=5; m=9216,t=4; m=12288,t=3; m=19456,t=2; m=47104,t=1)",
                Self::MIN_MEMORY_TIMES_ITERATIONS_KIB
            ));
        }
        Ok(params)
    }
}

/// Hashes and verifies passwords and recovery codes with argon2id.
#[derive(Clone, Debug)]
pub struct PasswordHasher {
    argon2: Argon2<'static>,
    /// A hash of nothing in particular, verified against when the email is
    /// unknown so that an unknown email costs the same time as a wrong
    /// password.
    decoy_hash: String,
    /// argon2's working memory, reused from one hash to the next.
    memory: Arc<WorkingMemory>,
}

/// argon2's working memory (7 MiB with the default parameters), kept for
/// the next hash instead of being allocated and freed each time: a fresh
/// allocation per hash lets the C allocator keep several dead copies per
/// thread (its per-thread arenas fragment around them), so the memory of a
/// busy server grew far beyond one buffer per concurrent hash. At most one
/// buffer per core is kept; more concurrent hashes allocate and free their
/// own. [`PasswordHasher::release_memory`] gives the kept buffers back to
/// the operating system once password checks have stopped for a while.
#[derive(Default)]
struct WorkingMemory {
    spare: Mutex<Vec<Vec<Block>>>,
}

impl fmt::Debug for WorkingMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let spare = self.spare.lock().map(|s| s.len()).unwrap_or(0);
        f.debug_struct("WorkingMemory")
            .field("spare_buffers", &spare)
            .finish()
    }
}

impl WorkingMemory {
    /// Free the kept buffers; returns how many bytes they held.
    fn release(&self) -> usize {
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        let bytes = spare.iter().map(|b| b.len() * size_of::<Block>()).sum();
        spare.clear();
        bytes
    }

    /// Run `f` with a buffer of `len` blocks (contents unspecified: argon2
    /// overwrites every block before it reads one).
    fn with<T>(&self, len: usize, f: impl FnOnce(&mut [Block]) -> T) -> T {
        let mut buffer = {
            let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            match spare.iter().position(|b| b.len() == len) {
                Some(i) => spare.swap_remove(i),
                None => Vec::new(),
            }
        };
        if buffer.len() != len {
            buffer = new_buffer(len);
        }
        let result = f(&mut buffer);
        let keep = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut spare = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        if spare.len() < keep {
            spare.push(buffer);
        }
        result
    }
}

/// Address space reserved for each working buffer, at least: glibc's
/// malloc serves requests above 32 MiB (its largest dynamic mmap threshold
/// on 64-bit targets) with a mapping of their own and unmaps it on free.
/// A 7 MiB request would instead be carved from a thread's arena once the
/// first one was freed (the threshold rises to the freed size), and the
/// arena keeps the pages after the buffer is dropped, so releasing the
/// buffer would not lower the process's memory. Only the `len` blocks in
/// use are ever touched, so only they occupy memory.
const MIN_BUFFER_RESERVATION: usize = 33 * 1024 * 1024;

/// A working buffer of `len` blocks in a mapping the allocator returns to
/// the system when it is dropped.
fn new_buffer(len: usize) -> Vec<Block> {
    let reserve = len.max(MIN_BUFFER_RESERVATION.div_ceil(size_of::<Block>()));
    let mut buffer = Vec::with_capacity(reserve);
    buffer.resize(len, Block::default());
    buffer
}

impl PasswordHasher {
    /// A hasher with these parameters.
    pub fn new(params: PasswordParams, rng: &dyn Randomness) -> MfaResult<PasswordHasher> {
        let params = argon2::Params::new(
            params.memory_kib,
            params.iterations,
            params.parallelism,
            None,
        )
        .map_err(|e| MfaError::InvalidRequest(format!("argon2 parameters: {e}")))?;
        let argon2 = Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut hasher = PasswordHasher {
            argon2,
            decoy_hash: String::new(),
            memory: Arc::default(),
        };
        hasher.decoy_hash = hasher.hash("decoy password for unknown users", rng)?;
        // A service that never checks a password need not keep a buffer.
        hasher.release_memory();
        Ok(hasher)
    }

    /// Give the working memory kept between hashes (one argon2 buffer per
    /// core at most, 7 MiB each with the default parameters) back to the
    /// operating system; returns how many bytes were released. The next
    /// hash allocates afresh, which costs it a few milliseconds of page
    /// faults. Meant for when password checks have stopped for a while, so
    /// a login storm does not leave its peak memory behind. Hashes running
    /// meanwhile keep their buffers until they finish.
    pub fn release_memory(&self) -> usize {
        self.memory.release()
    }

    /// argon2 of `secret` and `salt` into `out`, in reused working memory.
    fn compute(
        &self,
        argon2: &Argon2<'_>,
        secret: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<(), argon2::Error> {
        self.memory.with(argon2.params().block_count(), |blocks| {
            argon2.hash_password_into_with_memory(secret, salt, out, blocks)
        })
    }

    /// A PHC string of `secret` with a fresh 16-byte salt.
    pub fn hash(&self, secret: &str, rng: &dyn Randomness) -> MfaResult<String> {
        let fail = |e: &dyn fmt::Display| MfaError::InvalidRequest(format!("cannot hash: {e}"));
        let mut salt = [0u8; 16];
        rng.fill(&mut salt);
        let params = self.argon2.params();
        let mut out = vec![
            0u8;
            params
                .output_len()
                .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN)
        ];
        self.compute(&self.argon2, secret.as_bytes(), &salt, &mut out)
            .map_err(|e| fail(&e))?;
        let phc = PasswordHash {
            algorithm: argon2::Algorithm::Argon2id.ident(),
            version: Some(argon2::Version::V0x13.into()),
            params: ParamsString::try_from(params).map_err(|e| fail(&e))?,
            salt: Some(Salt::new(&salt).map_err(|e| fail(&e))?),
            hash: Some(Output::new(&out).map_err(|e| fail(&e))?),
        };
        Ok(phc.to_string())
    }

    /// Whether `secret` matches the PHC string. Algorithm, version and
    /// parameters are read from the string, so hashes made with older
    /// parameters still verify; parameters beyond what an operator may
    /// configure ([`PasswordParams::MAX_MEMORY_KIB`] and the others) match
    /// nothing, since a stored string asking for terabytes would end the
    /// process that tried to allocate them, or hold a hashing thread for
    /// good. The comparison is constant-time.
    pub fn verify(&self, secret: &str, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let (Some(salt), Some(expected)) = (&parsed.salt, &parsed.hash) else {
            return false;
        };
        let Ok(algorithm) = argon2::Algorithm::try_from(parsed.algorithm.as_str()) else {
            return false;
        };
        let version = match parsed.version.map(argon2::Version::try_from) {
            None => argon2::Version::default(),
            Some(Ok(version)) => version,
            Some(Err(_)) => return false,
        };
        let Ok(params) = argon2::Params::try_from(&parsed) else {
            return false;
        };
        if params.m_cost() > PasswordParams::MAX_MEMORY_KIB
            || params.t_cost() > PasswordParams::MAX_ITERATIONS
            || params.p_cost() > PasswordParams::MAX_PARALLELISM
        {
            return false;
        }
        let argon2 = Argon2::new(algorithm, version, params);
        let mut out = vec![0u8; expected.len()];
        if self
            .compute(&argon2, secret.as_bytes(), salt, &mut out)
            .is_err()
        {
            return false;
        }
        expected.as_bytes().ct_eq(&out).into()
    }

    /// Whether `phc` was made with this hasher's algorithm, version and
    /// parameters. A password that verifies against a hash that is not
    /// current is hashed again, so that changed parameters reach every
    /// account that logs in.
    pub fn is_current(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return false;
        };
        let version = parsed.version.map(argon2::Version::try_from);
        parsed.algorithm == argon2::Algorithm::Argon2id.ident()
            && matches!(version, Some(Ok(argon2::Version::V0x13)))
            && argon2::Params::try_from(&parsed).is_ok_and(|p| {
                let ours = self.argon2.params();
                p.m_cost() == ours.m_cost()
                    && p.t_cost() == ours.t_cost()
                    && p.p_cost() == ours.p_cost()
                    && parsed.hash.map(|h| h.len())
                        == Some(
                            ours.output_len()
                                .unwrap_or(argon2::Params::DEFAULT_OUTPUT_LEN),
                        )
            })
    }

    /// Spend the time of one verification without a user (always false).
    pub fn verify_decoy(&self, secret: &str) -> bool {
        let _ = self.verify(secret, &self.decoy_hash);
        false
    }
}

/// The zxcvbn score a new password must reach by default: 3, more than
/// 10^8 guesses estimated ("safely unguessable" in zxcvbn's words).
pub const DEFAULT_PASSWORD_MIN_STRENGTH: u8 = 3;

/// The first characters of a password that its strength is estimated on.
/// zxcvbn's time grows much faster than the length for characters it
/// reads as substitutions (`4@8({[<3691!|7` repeated: 40 ms at 32
/// characters in a release build, 190 ms at 64, five seconds in a debug
/// build), and no password whose first 32 characters are hard to guess
/// is easy to guess.
const STRENGTH_CHECKED_CHARS: usize = 32;

/// Check a new password's guessability (NIST SP 800-63B 3.1.1.2: common,
/// expected or context-specific passwords are refused): its zxcvbn score
/// must reach `min_score` (0 to 4; 0 checks nothing), with the words of
/// `context` (the user's email and names) counted as guessable. The
/// refusal says why, in zxcvbn's words ("This is a top-100 common
/// password."). Check [`check_password_rules`] first.
pub fn check_password_strength(password: &str, context: &[&str], min_score: u8) -> MfaResult<()> {
    if min_score == 0 {
        return Ok(());
    }
    let checked: String = password.chars().take(STRENGTH_CHECKED_CHARS).collect();
    // zxcvbn matches each input as a whole word: `alice@example.com` alone
    // does not make `alice.example2027` guessable, its parts do.
    let mut words: Vec<&str> = context.to_vec();
    words.extend(
        context
            .iter()
            .flat_map(|text| text.split(|c: char| !c.is_alphanumeric()))
            .filter(|part| part.chars().count() >= 3),
    );
    let estimate = zxcvbn::zxcvbn(&checked, &words);
    if u8::from(estimate.score()) >= min_score {
        return Ok(());
    }
    let mut why = String::from("password is too easy to guess.");
    if let Some(feedback) = estimate.feedback() {
        if let Some(warning) = feedback.warning() {
            why = format!("password is too easy to guess: {warning}");
            if !why.ends_with('.') {
                why.push('.');
            }
        }
        for suggestion in feedback.suggestions() {
            why.push_str(&format!(" {suggestion}"));
        }
    }
    if !why.ends_with('.') {
        why.push('.');
    }
    why.push_str(" A passphrase of four or more unrelated words is strong and easy to remember.");
    Err(MfaError::InvalidRequest(why))
}

/// Check a new password against the length rules.
pub fn check_password_rules(password: &str) -> MfaResult<()> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(MfaError::InvalidRequest(format!(
            "password must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(MfaError::InvalidRequest(format!(
            "password must have at most {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok(())
}

/// A new opaque bearer token: 256 random bits, base64url.
pub fn new_token(rng: &dyn Randomness) -> String {
    let mut bytes = [0u8; 32];
    rng.fill(&mut bytes);
    BASE64URL_NOPAD.encode(&bytes)
}

/// The stored form of a token: hex SHA-256. Tokens carry 256 random bits,
/// so a fast hash is enough; it only keeps a database reader from using them.
pub fn hash_token(token: &str) -> String {
    HEXLOWER.encode(&Sha256::digest(token.as_bytes()))
}

/// A numeric code of `digits` digits, uniform over all values.
pub fn new_numeric_code(rng: &dyn Randomness, digits: u32) -> String {
    let modulus = 10u64.pow(digits.min(18));
    // Reject the top slice of u64 that would bias the remainder.
    let limit = u64::MAX - (u64::MAX % modulus);
    loop {
        let mut b = [0u8; 8];
        rng.fill(&mut b);
        let v = u64::from_le_bytes(b);
        if v < limit {
            return format!("{:0width$}", v % modulus, width = digits as usize);
        }
    }
}

/// A random hex salt for an email code.
pub fn new_salt(rng: &dyn Randomness) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    HEXLOWER.encode(&b)
}

/// Hex SHA-256 over salt and code. Email codes live ten minutes and are
/// single use, so a salted fast hash keeps them out of the database without
/// an argon2 cost on every send.
pub fn hash_email_code(salt: &str, code: &str) -> String {
    let mut h = Sha256::new();
    h.update(salt.as_bytes());
    h.update(b":");
    h.update(code.as_bytes());
    HEXLOWER.encode(&h.finalize())
}

/// Constant-time equality of two strings.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Number of recovery codes in a set.
pub const RECOVERY_CODE_COUNT: usize = 10;

/// A new recovery code: 50 random bits as ten base32 letters, shown as
/// `xxxxx-xxxxx`.
pub fn new_recovery_code(rng: &dyn Randomness) -> String {
    // 8 bytes encode to 13 base32 letters; the first ten carry 50 full bits.
    let mut b = [0u8; 8];
    rng.fill(&mut b);
    let s = BASE32_NOPAD.encode(&b).to_lowercase();
    let letters: String = s.chars().take(10).collect();
    let (a, z) = letters.split_at(5);
    format!("{a}-{z}")
}

/// The canonical form a recovery code is hashed in: lower case, without
/// hyphens or white space. `None` for anything that cannot be a code.
pub fn normalize_recovery_code(input: &str) -> Option<String> {
    let s: String = input
        .chars()
        .filter(|c| *c != '-' && !c.is_ascii_whitespace())
        .collect::<String>()
        .to_ascii_lowercase();
    let valid = s.len() == 10
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || ('2'..='7').contains(&c));
    valid.then_some(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::OsRandomness;

    /// A hasher with m = 1 MiB, t = 1: fast, for tests of everything but
    /// the production parameters.
    fn small_hasher(rng: &OsRandomness) -> PasswordHasher {
        let params = PasswordParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        };
        PasswordHasher::new(params, rng).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn password_round_trip_and_decoy() {
        let rng = OsRandomness;
        let hasher =
            PasswordHasher::new(PasswordParams::default(), &rng).unwrap_or_else(|e| panic!("{e}"));
        let phc = hasher
            .hash("correct horse", &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(phc.starts_with("$argon2id$v=19$m=7168,t=5,p=1$"), "{phc}");
        assert!(hasher.is_current(&phc));
        assert!(hasher.verify("correct horse", &phc));
        assert!(!hasher.verify("wrong horse", &phc));
        assert!(!hasher.verify("correct horse", "not a hash"));
        assert!(!hasher.verify_decoy("anything"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crate_both_ways() {
        use argon2::{PasswordHasher as _, PasswordVerifier as _};
        let rng = OsRandomness;
        // Small parameters: the format and the algorithm are under test.
        let hasher = small_hasher(&rng);
        let ours = hasher
            .hash("p\u{e4}ssword", &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(ours.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{ours}");
        let reference = Argon2::default();
        assert!(
            reference
                .verify_password("p\u{e4}ssword".as_bytes(), ours.as_str())
                .is_ok()
        );
        assert!(
            reference
                .verify_password(b"password", ours.as_str())
                .is_err()
        );
        // Hashes of the crate itself, with other parameters and algorithms,
        // verify here: stored hashes outlive parameter changes.
        for (algorithm, m) in [
            (argon2::Algorithm::Argon2id, 2048),
            (argon2::Algorithm::Argon2i, 1024),
        ] {
            let p = argon2::Params::new(m, 2, 1, None).unwrap_or_else(|e| panic!("{e}"));
            let other = Argon2::new(algorithm, argon2::Version::V0x13, p)
                .hash_password_with_salt(b"secret pass", b"sixteen byte salt")
                .unwrap_or_else(|e| panic!("{e}"))
                .to_string();
            assert!(hasher.verify("secret pass", &other), "{other}");
            assert!(!hasher.verify("secret pas", &other), "{other}");
        }
        // Garbage and truncated strings never verify.
        assert!(!hasher.verify("x", "$argon2id$v=19$m=1024,t=1,p=1$"));
        assert!(!hasher.verify("x", "$argon2id$v=7$m=1024,t=1,p=1$c2FsdHNhbHQ$AAAA"));
        assert!(!hasher.verify(
            "x",
            "$scrypt$ln=4,r=8,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA"
        ));
        // A stored string asking for more than an operator may configure
        // matches nothing, unhashed: 4 TiB would end the process, and
        // 2^32 - 1 passes would hold a hashing thread for good.
        for params in [
            "m=4294967295,t=1,p=1",
            "m=1024,t=4294967295,p=1",
            "m=1024,t=1,p=255",
        ] {
            let stored = format!(
                "$argon2id$v=19${params}$mNCYs2VI5y2l7xFHQ5JStA$lMn41msxJJmhBxJ6QG0FNf24t7MFgybtYfR2FpL8s+E"
            );
            assert!(!hasher.verify("x", &stored), "{stored}");
        }
    }

    #[test]
    fn parameters_parse_from_their_phc_form_and_refuse_weak_ones() {
        for text in [
            "m=7168,t=5,p=1",
            " t=5, p=1 ,m=7168",
            "m=19456,t=2,p=1",
            "m=47104,t=1,p=1",
            "m=65536,t=3,p=4",
        ] {
            let params: PasswordParams = text.parse().unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(params.to_string().parse::<PasswordParams>(), Ok(params));
        }
        assert_eq!(
            PasswordParams::default().to_string(),
            "m=7168,t=5,p=1",
            "the default is one of OWASP's configurations"
        );
        for (text, expected) in [
            ("", "expected argon2id parameters"),
            ("m=7168,t=5", "expected argon2id parameters"),
            ("m=7168,t=5,p=1,m=8192", "expected argon2id parameters"),
            ("m=7168,t=5,x=1", "expected argon2id parameters"),
            ("m=7 MiB,t=5,p=1", "expected argon2id parameters"),
            ("m=-1,t=5,p=1", "expected argon2id parameters"),
            ("m=7168,t=4,p=1", "weaker than OWASP"),
            ("m=4096,t=8,p=1", "m × t must be at least"),
            ("m=19456,t=1,p=1", "weaker than OWASP"),
            ("m=65536,t=0,p=1", "t must be"),
            ("m=65536,t=2,p=0", "p must be"),
            ("m=65536,t=2,p=17", "p must be"),
            ("m=2000000,t=2,p=1", "m must be"),
        ] {
            let err = text.parse::<PasswordParams>().unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }

    #[test]
    fn only_hashes_with_the_configured_parameters_are_current() {
        let rng = OsRandomness;
        let hasher = small_hasher(&rng);
        let ours = hasher
            .hash("a password", &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(hasher.is_current(&ours));
        let stronger = PasswordParams {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        };
        let other = PasswordHasher::new(stronger, &rng).unwrap_or_else(|e| panic!("{e}"));
        assert!(!other.is_current(&ours), "other memory");
        let theirs = other
            .hash("a password", &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!hasher.is_current(&theirs));
        let argon2i = Argon2::new(
            argon2::Algorithm::Argon2i,
            argon2::Version::V0x13,
            argon2::Params::new(1024, 1, 1, None).unwrap_or_else(|e| panic!("{e}")),
        );
        {
            use argon2::PasswordHasher as _;
            let phc = argon2i
                .hash_password_with_salt(b"a password", b"sixteen byte salt")
                .unwrap_or_else(|e| panic!("{e}"))
                .to_string();
            assert!(hasher.verify("a password", &phc));
            assert!(!hasher.is_current(&phc), "other algorithm: {phc}");
        }
        assert!(!hasher.is_current("not a hash"));
        assert!(!hasher.is_current(""));
    }

    #[test]
    fn working_memory_is_reused_and_bounded() {
        let memory = WorkingMemory::default();
        let first = memory.with(8, |b| b.as_ptr() as usize);
        let second = memory.with(8, |b| b.as_ptr() as usize);
        assert_eq!(first, second, "the buffer is reused");
        // A buffer of another size does not replace the kept one.
        memory.with(4, |b| assert_eq!(b.len(), 4));
        let kept = memory.spare.lock().map(|s| s.len()).unwrap_or(0);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert!(kept <= cores, "{kept} buffers kept for {cores} cores");
        assert_eq!(memory.with(8, |b| b.as_ptr() as usize), first);
    }

    #[test]
    fn released_memory_is_allocated_again_for_the_next_hash() {
        let rng = OsRandomness;
        let hasher = small_hasher(&rng);
        assert_eq!(hasher.release_memory(), 0, "the decoy's buffer is not kept");
        let phc = hasher
            .hash("first password", &rng)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(hasher.release_memory(), 1024 * 1024);
        assert_eq!(hasher.release_memory(), 0);
        assert!(hasher.verify("first password", &phc));
        assert!(!hasher.verify("other password", &phc));
        assert_eq!(hasher.release_memory(), 1024 * 1024);
    }

    #[test]
    fn buffers_reserve_enough_to_be_mapped_on_their_own() {
        let buffer = new_buffer(16);
        assert_eq!(buffer.len(), 16);
        assert!(buffer.capacity() * size_of::<Block>() >= MIN_BUFFER_RESERVATION);
        let large = MIN_BUFFER_RESERVATION / size_of::<Block>() + 5;
        assert_eq!(new_buffer(large).capacity(), large);
    }

    #[test]
    fn numeric_codes_have_exact_digits() {
        let rng = OsRandomness;
        for _ in 0..200 {
            let c = new_numeric_code(&rng, 6);
            assert_eq!(c.len(), 6);
            assert!(c.bytes().all(|b| b.is_ascii_digit()));
        }
    }

    #[test]
    fn recovery_codes_normalize() {
        let rng = OsRandomness;
        let code = new_recovery_code(&rng);
        assert_eq!(code.len(), 11);
        let n = normalize_recovery_code(&code).unwrap_or_default();
        assert_eq!(n.len(), 10);
        assert_eq!(normalize_recovery_code(&code.to_uppercase()), Some(n));
        assert_eq!(normalize_recovery_code("short"), None);
        assert_eq!(normalize_recovery_code("0123456789"), None);
    }

    #[test]
    fn token_hash_is_stable_and_distinct() {
        let rng = OsRandomness;
        let t = new_token(&rng);
        assert!(t.len() >= 43);
        assert_eq!(hash_token(&t), hash_token(&t));
        assert_ne!(hash_token(&t), hash_token(&new_token(&rng)));
    }

    #[test]
    fn password_rules() {
        assert!(check_password_rules("short").is_err());
        let strong = DEFAULT_PASSWORD_MIN_STRENGTH;
        for weak in ["password123", "qwertyuiop", "        ", "Welcome2024!"] {
            let refused = check_password_strength(weak, &[], strong).expect_err(weak);
            assert!(
                refused.to_string().contains("too easy to guess"),
                "{refused}"
            );
        }
        // Made of the user's own address or an unusual name: guessable
        // for them, not for others.
        let context = ["zorblax@quuxcorp.example", "Zorblax"];
        for own in ["zorblax@quuxcorp.example1", "zorblaxquuxcorp"] {
            check_password_strength(own, &[], strong).expect(own);
            assert!(
                check_password_strength(own, &context, strong).is_err(),
                "{own}"
            );
        }
        for fine in ["correct horse battery staple", "kR7#vP2q!mZ9"] {
            check_password_strength(fine, &["alice@example.com"], strong).expect(fine);
        }
        check_password_strength("password123", &[], 0).expect("0 checks nothing");
        // Only the start of a long one is estimated: quickly.
        check_password_strength(&"kR7#vP2q!mZ9 ".repeat(70), &[], strong).expect("long");
        assert!(check_password_rules("long enough").is_ok());
        assert!(check_password_rules(&"x".repeat(2000)).is_err());
    }
}
