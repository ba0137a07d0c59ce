//! API tokens (docs/design.md §7): `wl_<id>_<secret>`, where the id (96 random bits) finds the
//! stored record and the secret (256 random bits) is stored only as its SHA-256, compared in
//! constant time. A role says what the token may do; its name is the actor of what it does.

use ring::digest;
use wayline_journal::Time;
use wayline_store::{Store, TokenRecord};

/// What a token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read executions, events and logs.
    Read,
    /// Read, and start and steer executions.
    Operate,
    /// Everything an operator may, and the server's administration.
    Admin,
    /// Only what agents do (their own endpoints).
    Agent,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Read, Role::Operate, Role::Admin, Role::Agent];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Operate => "operate",
            Role::Admin => "admin",
            Role::Agent => "agent",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.name() == text)
    }

    /// Whether a token of this role may do what needs `needed`.
    pub fn allows(self, needed: Role) -> bool {
        match self {
            Role::Admin => needed != Role::Agent,
            Role::Operate => matches!(needed, Role::Read | Role::Operate),
            Role::Read => needed == Role::Read,
            Role::Agent => needed == Role::Agent,
        }
    }
}

/// Who made a request: the token's name and role.
#[derive(Debug, Clone)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// A new token: the text to hand to its user (shown once) and the record to store.
#[derive(Debug)]
pub struct Issued {
    pub token: String,
    pub record: TokenRecord,
}

const PREFIX: &str = "wl_";
const ID_BYTES: usize = 12;
const SECRET_BYTES: usize = 32;

/// Why a name cannot name a token, if it cannot.
pub fn check_name(name: &str) -> Result<(), String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{name}` cannot name a token: use 1 to 64 letters, digits, `-`, `_`, `.` or `@`, starting with a letter or digit"
        ))
    }
}

/// Makes a new token (nothing is stored).
pub fn issue(
    name: &str,
    role: Role,
    now: Time,
    expires_at: Option<Time>,
) -> Result<Issued, String> {
    check_name(name)?;
    let mut random = [0u8; ID_BYTES + SECRET_BYTES];
    getrandom::fill(&mut random).map_err(|error| format!("no random bytes: {error}"))?;
    let (id, secret) = random.split_at(ID_BYTES);
    let (id, secret) = (hex(id), hex(secret));
    let record = TokenRecord {
        name: name.to_owned(),
        hash: hash(&secret),
        id: id.clone(),
        role: role.name().to_owned(),
        created_at: now,
        expires_at,
    };
    Ok(Issued { token: format!("{PREFIX}{id}_{secret}"), record })
}

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// Not a token this server issued, a revoked one, or an expired one. The three are not
    /// told apart, to give a guesser nothing.
    Invalid,
}

/// The caller a bearer token names, checked against the store at `now`.
pub async fn authenticate<S: Store>(
    store: &S,
    authorization: Option<&str>,
    now: Time,
) -> Result<Result<Caller, Refused>, wayline_store::Error> {
    let Some(header) = authorization else { return Ok(Err(Refused::Missing)) };
    let Some(token) = header.strip_prefix("Bearer ").map(str::trim) else {
        return Ok(Err(Refused::Missing));
    };
    let Some((id, secret)) = token.strip_prefix(PREFIX).and_then(|rest| rest.split_once('_'))
    else {
        return Ok(Err(Refused::Invalid));
    };
    if id.len() != ID_BYTES * 2 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(Err(Refused::Invalid));
    }
    let record = store.token(id).await?;
    // The secret is hashed and compared even when the id is unknown, so that both take the
    // same time.
    let expected = record.as_ref().map_or_else(|| "0".repeat(64), |record| record.hash.clone());
    let matches = constant_time_eq(hash(secret).as_bytes(), expected.as_bytes());
    let Some(record) = record.filter(|_| matches) else { return Ok(Err(Refused::Invalid)) };
    if record.expires_at.is_some_and(|expires| expires <= now) {
        return Ok(Err(Refused::Invalid));
    }
    let Some(role) = Role::parse(&record.role) else { return Ok(Err(Refused::Invalid)) };
    Ok(Ok(Caller { name: record.name, role }))
}

fn hash(secret: &str) -> String {
    hex(digest::digest(&digest::SHA256, secret.as_bytes()).as_ref())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Equality whose time depends only on the lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_say() {
        use Role::*;
        let allowed: Vec<(Role, Vec<Role>)> = Role::ALL
            .into_iter()
            .map(|role| {
                (role, Role::ALL.into_iter().filter(|needed| role.allows(*needed)).collect())
            })
            .collect();
        assert_eq!(
            allowed,
            [
                (Read, vec![Read]),
                (Operate, vec![Read, Operate]),
                (Admin, vec![Read, Operate, Admin]),
                (Agent, vec![Agent]),
            ]
        );
    }

    #[test]
    fn an_issued_token_has_its_shape_and_only_its_hash_is_kept() {
        let issued = issue("ci", Role::Read, Time::from_micros(0), None).unwrap();
        let rest = issued.token.strip_prefix("wl_").unwrap();
        let (id, secret) = rest.split_once('_').unwrap();
        assert_eq!((id.len(), secret.len()), (24, 64));
        assert_eq!(issued.record.id, id);
        assert_eq!(issued.record.hash, hash(secret));
        assert!(!issued.record.hash.contains(secret));
        assert_ne!(
            issue("ci", Role::Read, Time::from_micros(0), None).unwrap().token,
            issued.token
        );
        assert!(issue("", Role::Read, Time::from_micros(0), None).is_err());
        assert!(issue("a b", Role::Read, Time::from_micros(0), None).is_err());
        assert!(issue("-x", Role::Read, Time::from_micros(0), None).is_err());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
