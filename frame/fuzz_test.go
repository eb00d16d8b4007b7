package frame

import (
	"bytes"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// FuzzParser checks that the way input is split into reads never changes
// the result, that the parser agrees with a line-at-a-time transcription of
// the spec, and that every dispatched frame survives AppendEvent and a
// second parse. Seeds are in testdata/fuzz/FuzzParser.
func FuzzParser(f *testing.F) {
	for _, tc := range parserCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		h := fnv.New64a()
		h.Write(in)
		seed := h.Sum64()
		big := len(in) + 16 // no line or block can exceed it
		small := 1 + int(seed%48)

		whole := parseAll(bytes.NewReader(in), big)
		if ref := refParse(in); !slices.Equal(whole, ref) {
			t.Fatalf("input %q\nparser %v\nspec   %v", in, whole, ref)
		}
		for _, maxFrame := range []int{big, small} {
			want := whole
			if maxFrame != big {
				want = parseAll(bytes.NewReader(in), maxFrame)
			}
			if got := parseAll(&oneByte{string(in)}, maxFrame); !slices.Equal(got, want) {
				t.Fatalf("input %q, maxFrame %d\none byte %v\nwhole    %v", in, maxFrame, got, want)
			}
			for i := range uint64(3) {
				r := &splitReader{s: in, rng: rand.New(rand.NewPCG(seed, i)), max: 1 + int(seed>>8%uint64(1+len(in)))}
				if got := parseAll(r, maxFrame); !slices.Equal(got, want) {
					t.Fatalf("input %q, maxFrame %d, split %d\nsplit %v\nwhole %v", in, maxFrame, i, got, want)
				}
			}
			for _, r := range want {
				size := len(r.Data) + len(r.Event) + len(r.ID)
				if r.Dispatch {
					size += dataLineCost * (strings.Count(r.Data, "\n") + 1) // "data: " per line, once encoded
				}
				if r.Err == "" && size > maxFrame {
					t.Fatalf("input %q: frame %v exceeds maxFrame %d", in, r, maxFrame)
				}
			}
		}

		for _, r := range whole {
			if !r.Dispatch {
				continue
			}
			f := Frame{Event: []byte(r.Event), Data: []byte(r.Data), Retry: r.Retry}
			var id []byte
			if r.HasID {
				id = []byte(r.ID)
			}
			enc := AppendEvent(nil, id, &f)
			want := d(r.Data).ev(r.Event).retry(r.Retry)
			if len(id) > 0 {
				want = want.id(r.ID)
			}
			if got := parseAll(bytes.NewReader(enc), 0); !slices.Equal(got, []rec{want, eof}) {
				t.Fatalf("round trip of %v through %q gives %v", r, enc, got)
			}
		}
	})
}

// refParse is the spec's algorithm transcribed literally, one whole line at
// a time, with no size bound.
func refParse(in []byte) []rec {
	in = bytes.TrimPrefix(in, []byte(bom))
	var (
		out            []rec
		data           []byte
		event, id      string
		hasData, hasID bool
		had            bool
		retry          int64 = -1
	)
	for {
		i := bytes.IndexAny(in, "\r\n")
		if i < 0 {
			break // an unterminated last line is dropped, as is its block
		}
		line := in[:i]
		if in[i] == '\r' && i+1 < len(in) && in[i+1] == '\n' {
			i++
		}
		in = in[i+1:]

		if len(line) == 0 {
			if had {
				out = append(out, rec{Event: event, Data: string(bytes.TrimSuffix(data, []byte("\n"))),
					ID: id, HasID: hasID, Retry: retry, Dispatch: hasData})
			}
			data, event, id, hasData, hasID, had, retry = nil, "", "", false, false, false, -1
			continue
		}
		if line[0] == ':' {
			continue
		}
		name, value, found := bytes.Cut(line, []byte(":"))
		if found {
			value = bytes.TrimPrefix(value, []byte(" "))
		}
		switch string(name) {
		case "data":
			data = append(append(data, value...), '\n')
			hasData, had = true, true
		case "event":
			event, had = string(value), true
		case "id":
			if bytes.IndexByte(value, 0) < 0 {
				id, hasID, had = string(value), true, true
			}
		case "retry":
			digits := len(value) > 0
			for _, c := range value {
				digits = digits && '0' <= c && c <= '9'
			}
			if digits {
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil {
					n = math.MaxInt64 // only ErrRange is possible for digits
				}
				retry, had = n, true
			}
		}
	}
	return append(out, rec{Err: errKindEOF})
}

// TestRefParse keeps the reference honest against the table.
func TestRefParse(t *testing.T) {
	for _, tc := range parserCases {
		if tc.maxFrame != 0 {
			continue
		}
		if got := refParse([]byte(tc.in)); !slices.Equal(got, tc.want) {
			t.Errorf("%s: reference gives %v, want %v", tc.name, got, tc.want)
		}
	}
}
