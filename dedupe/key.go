package dedupe

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
)

// DefaultKeyPrefix is the key prefix Key uses when its prefix is empty.
const DefaultKeyPrefix = "warren"

// MaxKeyPartLen is the longest prefix, queue or id that Key keeps as it
// is; a longer one is replaced by its hash.
const MaxKeyPartLen = 200

// MaxKeyLen is the longest key Key returns.
const MaxKeyLen = 3*MaxKeyPartLen + len(":{:}")

// hashedPartPrefix marks a part that Key replaced by its hash.
const hashedPartPrefix = "h-"

// Key returns the store key of message id from queue:
//
//	prefix + ":{" + queue + ":" + id + "}"
//
// The braces make queue and id a Redis Cluster hash tag. A queue or id is
// replaced by "h-" and the first 32 hex digits of its SHA-256 when it is
// longer than MaxKeyPartLen bytes, has a byte outside printable ASCII, has
// one of "{", "}", ":" or a space, or itself starts with "h-" (so a hashed
// part never equals a part kept as it is). The prefix is replaced the same
// way when it is too long or has a byte outside printable ASCII, "{", "}"
// or a space; ":" is allowed in it. An empty prefix means
// DefaultKeyPrefix. The result is at most MaxKeyLen bytes long and has
// exactly one "{" and one "}".
func Key(prefix, queue, id string) string {
	return KeysOf(prefix, queue).Key(id)
}

// QueueKeys makes the keys of one queue's messages, as Key does, with the
// prefix and queue checked once rather than per message.
type QueueKeys struct{ head string }

// KeysOf returns the key maker of queue's messages under prefix (see Key).
func KeysOf(prefix, queue string) QueueKeys {
	if prefix == "" {
		prefix = DefaultKeyPrefix
	}
	return QueueKeys{head: keyPrefix(prefix) + ":{" + keyPart(queue) + ":"}
}

// Key returns the store key of message id, as Key(prefix, queue, id).
func (k QueueKeys) Key(id string) string { return k.head + keyPart(id) + "}" }

// BodyKeyID returns an id for a message that has no message id: "sha256-"
// and the hex SHA-256 of body. Equal bodies get equal ids.
func BodyKeyID(body []byte) string {
	sum := sha256.Sum256(body)
	return "sha256-" + hex.EncodeToString(sum[:])
}

// keyPrefix returns prefix, or its hash if it is unsafe in a key.
func keyPrefix(prefix string) string {
	if !isPlain(prefix, prefixBytes) {
		return hashPart(prefix)
	}
	return prefix
}

// keyPart returns a queue or id, or its hash if it is unsafe in a key or
// looks like a hash.
func keyPart(s string) string {
	if strings.HasPrefix(s, hashedPartPrefix) || !isPlain(s, partBytes) {
		return hashPart(s)
	}
	return s
}

// hashPart returns "h-" and the first 32 hex digits of the SHA-256 of s.
func hashPart(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hashedPartPrefix + hex.EncodeToString(sum[:16])
}

// isPlain reports whether s is at most MaxKeyPartLen bytes long and every
// byte of it is one that allowed permits.
func isPlain(s string, allowed *[256]bool) bool {
	if len(s) > MaxKeyPartLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !allowed[s[i]] {
			return false
		}
	}
	return true
}

// Bytes a key prefix, and a queue or id, may keep as they are.
var (
	prefixBytes = plainBytes("{} ")
	partBytes   = plainBytes("{}: ")
)

// plainBytes permits the printable ASCII bytes, less those in forbidden.
func plainBytes(forbidden string) *[256]bool {
	var t [256]bool
	for b := 0x20; b <= 0x7e; b++ {
		t[b] = strings.IndexByte(forbidden, byte(b)) < 0
	}
	return &t
}
