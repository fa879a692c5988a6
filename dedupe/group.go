package dedupe

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// numSlots is the number of hash slots of Redis Cluster.
const numSlots = 16384

// slot returns the Redis Cluster hash slot of key: the CRC16 (XMODEM) of
// its hash tag, the part between the first "{" and the next "}" when that
// part is not empty, or else of the whole key, modulo 16384. Keys built
// by Key, and the keys SameSlot builds from them, share their slot.
func slot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if n := strings.IndexByte(key[open+1:], '}'); n > 0 {
			key = key[open+1 : open+1+n]
		}
	}
	return int(crc16(key)) % numSlots
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, initial value 0, no
// reflection), the checksum Redis Cluster hashes keys with.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^s[i]]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

// keyGroups splits the positions of keys into the groups of one script
// call each: at most maxBatch keys, and with bySlot only keys of one hash
// slot. Groups keep the order in which their first key came.
func keyGroups(keys []string, bySlot bool) [][]int {
	var groups [][]int
	if !bySlot {
		for start := 0; start < len(keys); start += maxBatch {
			g := make([]int, 0, min(maxBatch, len(keys)-start))
			for i := start; i < min(start+maxBatch, len(keys)); i++ {
				g = append(g, i)
			}
			groups = append(groups, g)
		}
		return groups
	}
	open := make(map[int]int, len(keys)) // slot -> its group still filling
	for i, k := range keys {
		slot := slot(k)
		g, ok := open[slot]
		if !ok || len(groups[g]) == maxBatch {
			g = len(groups)
			groups = append(groups, nil)
			open[slot] = g
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

// groupsBySlot reports whether the keys of one script call must share a
// hash slot: on a Cluster client, and on a single endpoint that refused a
// call on keys of several slots (a proxy in front of a sharded Redis).
func (s *RedisStore) groupsBySlot() bool {
	_, single := s.client.(*redis.Client)
	return !single || s.crossSlot.Load()
}

// runGrouped runs script, a many-keys script (see claimAllScript), for
// keys: one script call per group of keyGroups, every call in one
// pipeline (on Cluster go-redis sends each node its part at once), all
// within the op timeout. shared is ARGV[1]; owners[i] goes with keys[i].
// It returns each key's integer reply, or the error of its call. Every
// batched script call of the store goes through here, its pipeline run by
// exec.
func (s *RedisStore) runGrouped(ctx context.Context, exec execFunc, script *redis.Script, keys []string, shared any, owners []string) ([]int64, []error) {
	replies := make([]int64, len(keys))
	errs := make([]error, len(keys))
	if err := ctx.Err(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return replies, errs
	}
	ctx, cancel := context.WithTimeout(ctx, s.opTimeout)
	defer cancel()
	g := grouped{script: script, client: s.client, exec: exec, keys: keys, shared: shared, owners: owners, replies: replies, errs: errs, note: s.noteError}
	bySlot := s.groupsBySlot()
	refused, crossErr := g.send(ctx, keyGroups(keys, bySlot))
	if len(refused) > 0 && !bySlot {
		// A single endpoint that refuses keys of several slots: group by
		// slot now and from then on.
		s.crossSlot.Store(true)
		sub := make([]string, len(refused))
		for k, i := range refused {
			sub[k] = keys[i]
		}
		var groups [][]int
		for _, sg := range keyGroups(sub, true) {
			gr := make([]int, len(sg))
			for k, j := range sg {
				gr[k] = refused[j]
			}
			groups = append(groups, gr)
		}
		refused, crossErr = g.send(ctx, groups)
	}
	// Keys refused again, or refused although grouped by slot already,
	// must not pass for a reply of 0.
	for _, i := range refused {
		errs[i] = crossErr
	}
	return replies, errs
}

// grouped is one runGrouped call: its requests and their answers.
type grouped struct {
	script  *redis.Script
	client  redis.UniversalClient
	exec    execFunc
	keys    []string
	shared  any
	owners  []string
	replies []int64
	errs    []error
	note    func(context.Context, error) // RedisStore.noteError
}

// send runs one script call per group, in one pipeline, and writes the
// answers. It returns the positions of the keys whose call the server
// refused with CROSSSLOT, and that refusal, their answers left for the
// caller.
func (g *grouped) send(ctx context.Context, groups [][]int) (crossSlot []int, crossErr error) {
	cmds := make([]*redis.Cmd, len(groups))
	err := g.exec(ctx, func(pipe redis.Pipeliner) {
		for n, gr := range groups {
			keys, args := g.args(gr)
			cmds[n] = g.script.EvalSha(ctx, pipe, keys, args...)
		}
	})
	if err != nil {
		g.note(ctx, err)
		for _, gr := range groups {
			for _, i := range gr {
				g.errs[i] = err
			}
		}
		return nil, nil
	}
	for n, gr := range groups {
		cmd := cmds[n]
		if serverError(cmd.Err(), "NOSCRIPT") {
			// The node lost its script cache (a restart, a promoted
			// replica): this call loads it.
			keys, args := g.args(gr)
			cmd = g.script.Run(ctx, g.client, keys, args...)
		}
		vals, err := cmd.Int64Slice()
		if err == nil && len(vals) != len(gr) {
			err = fmt.Errorf("unexpected script reply: %d values for %d keys", len(vals), len(gr))
		}
		if serverError(err, "CROSSSLOT") {
			crossSlot, crossErr = append(crossSlot, gr...), err
			continue
		}
		g.note(ctx, err)
		for k, i := range gr {
			if err != nil {
				g.errs[i] = err
				continue
			}
			g.replies[i] = vals[k]
		}
	}
	return crossSlot, crossErr
}

// args returns the KEYS and ARGV of the call of group gr.
func (g *grouped) args(gr []int) ([]string, []any) {
	keys := make([]string, len(gr))
	args := make([]any, 1, len(gr)+1)
	args[0] = g.shared
	for k, i := range gr {
		keys[k] = g.keys[i]
		args = append(args, g.owners[i])
	}
	return keys, args
}

// serverError reports whether err is the server's error reply with code
// (its first word: CROSSSLOT, NOSCRIPT, WRONGTYPE, ...).
func serverError(err error, code string) bool {
	var re redis.Error
	return errors.As(err, &re) && strings.HasPrefix(re.Error(), code)
}
