//! The names of everything wschat keeps in Redis, built in one place.
//!
//! Every key starts with the configured prefix (default `wschat:`), so several deployments can
//! share one Redis database, and the tests can run side by side. After the prefix comes a fixed
//! word for the kind of key, then `:` and the variable part (a room, a nickname, a node), so a key
//! of one kind can never be spelled like a key of another, whatever a room is called.
//!
//! Pub/sub channels are not keys: they are global to the server, not per database (the Redis
//! manual, "Pub/Sub": "Pub/Sub has no relation to the key space ... publishing on db 10 will be
//! heard by a subscriber on db 1"). Channel names therefore also carry the database number, so two
//! deployments on different databases of one server with the same prefix do not hear each other.

/// Key and channel names for one deployment (a prefix and a database).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    /// `{prefix}{db}:`, the start of every channel name.
    channels: String,
}

/// What a channel name designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Channel {
    /// A room's channel: its messages and room events.
    Room(String),
    /// A node's own channel: messages addressed to that node.
    Node(String),
}

impl Keys {
    pub fn new(prefix: &str, db: u32) -> Self {
        Self {
            prefix: prefix.to_owned(),
            channels: format!("{prefix}{db}:"),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// String: the data's epoch, 16 hex digits.
    pub fn epoch(&self) -> String {
        format!("{}epoch", self.prefix)
    }

    /// String (integer): the last number given to an anonymous nickname.
    pub fn anonymous(&self) -> String {
        format!("{}anonymous", self.prefix)
    }

    /// String (integer): the highest message id ever given.
    pub fn last_id(&self) -> String {
        format!("{}last_id", self.prefix)
    }

    /// Stream: the room's retained messages, entry id `<message id>-0`, fields `n` (nickname), `t`
    /// (text), `ts` (unix ms).
    pub fn history(&self, room: &str) -> String {
        format!("{}history:{room}", self.prefix)
    }

    /// Sorted set: the room's idempotency keys, each scored by the id of the message it stored.
    pub fn dedup(&self, room: &str) -> String {
        format!("{}dedup:{room}", self.prefix)
    }

    /// String with an expiry: the nickname's lease, holding its owner. Nicknames are unique without
    /// regard to case, so the key holds the lowercase form (the chat's own folding).
    pub fn lease(&self, nickname: &str) -> String {
        format!("{}nick:{}", self.prefix, nickname.to_lowercase())
    }

    /// Hash: the room's members, member → the node that holds it.
    pub fn presence(&self, room: &str) -> String {
        format!("{}presence:{room}", self.prefix)
    }

    /// The start of every node liveness key (the presence script appends the node).
    pub fn alive_prefix(&self) -> String {
        format!("{}alive:", self.prefix)
    }

    /// String with an expiry: present while the node renews it.
    pub fn alive(&self, node: &str) -> String {
        format!("{}{node}", self.alive_prefix())
    }

    /// String with an expiry: a resume token's session (nickname and room).
    pub fn resume(&self, token: &str) -> String {
        format!("{}resume:{token}", self.prefix)
    }

    /// The room's pub/sub channel.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}room:{room}", self.channels)
    }

    /// The node's own pub/sub channel.
    pub fn node_channel(&self, node: &str) -> String {
        format!("{}node:{node}", self.channels)
    }

    /// Which room or node a channel name designates, if it is one of ours.
    pub fn parse_channel(&self, channel: &[u8]) -> Option<Channel> {
        let rest = std::str::from_utf8(channel.strip_prefix(self.channels.as_bytes())?).ok()?;
        if let Some(room) = rest.strip_prefix("room:") {
            Some(Channel::Room(room.to_owned()))
        } else {
            rest.strip_prefix("node:")
                .map(|node| Channel::Node(node.to_owned()))
        }
    }
}
