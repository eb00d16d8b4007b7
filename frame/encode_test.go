package frame

import (
	"bytes"
	"math"
	"slices"
	"strings"
	"testing"
)

func TestAppendEvent(t *testing.T) {
	for _, tc := range []struct {
		name  string
		id    string
		f     Frame
		want  string
		round rec // what parsing the output gives; zero: d(f.Data) with id, event and retry
	}{
		{"data only", "", Frame{Data: []byte("x"), Retry: -1}, "data: x\n\n", rec{}},
		{"all fields", "5", Frame{Event: []byte("add"), Data: []byte("a\nb"), Retry: 1000},
			"id: 5\nevent: add\nretry: 1000\ndata: a\ndata: b\n\n", rec{}},
		{"f.ID is not written", "", Frame{ID: []byte("9"), HasID: true, Data: []byte("x"), Retry: -1}, "data: x\n\n", d("x")},
		{"empty data", "", Frame{Retry: -1}, "data: \n\n", rec{}},
		{"zero Frame writes retry 0", "", Frame{}, "retry: 0\ndata: \n\n", rec{}},
		{"empty lines", "", Frame{Data: []byte("\n\n"), Retry: -1}, "data: \ndata: \ndata: \n\n", rec{}},
		{"trailing LF", "", Frame{Data: []byte("a\n"), Retry: -1}, "data: a\ndata: \n\n", rec{}},
		{"leading spaces kept", " i", Frame{Event: []byte(" e"), Data: []byte(" a\n  b"), Retry: -1},
			"id:  i\nevent:  e\ndata:  a\ndata:   b\n\n", rec{}},
		{"colons and NUL in data", "", Frame{Data: []byte("a: b\x00"), Retry: -1}, "data: a: b\x00\n\n", rec{}},
		{"CR in data splits lines", "", Frame{Data: []byte("a\rb"), Retry: -1}, "data: a\ndata: b\n\n", d("a\nb")},
		{"CRLF in data is one break", "", Frame{Data: []byte("a\r\nb"), Retry: -1}, "data: a\ndata: b\n\n", d("a\nb")},
		{"CR CR in data cannot end the block", "", Frame{Data: []byte("a\r\rdata: evil"), Retry: -1},
			"data: a\ndata: \ndata: data: evil\n\n", d("a\n\ndata: evil")},
		{"trailing CR in data", "", Frame{Data: []byte("a\r"), Retry: -1}, "data: a\ndata: \n\n", d("a\n")},
		{"LF CR in data", "", Frame{Data: []byte("a\n\rb"), Retry: -1}, "data: a\ndata: \ndata: b\n\n", d("a\n\nb")},
		{"line endings dropped from event", "", Frame{Event: []byte("a\r\nb\n\nid: x"), Data: []byte("d"), Retry: -1},
			"event: abid: x\ndata: d\n\n", d("d").ev("abid: x")},
		{"line endings dropped from id", "1\n\ndata: x\r", Frame{Data: []byte("d"), Retry: -1},
			"id: 1data: x\ndata: d\n\n", d("d").id("1data: x")},
		{"retry max", "", Frame{Data: []byte("x"), Retry: math.MaxInt64},
			"retry: 9223372036854775807\ndata: x\n\n", rec{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := AppendEvent([]byte("prefix"), []byte(tc.id), &tc.f)
			if string(got) != "prefix"+tc.want {
				t.Fatalf("got %q, want %q", got, "prefix"+tc.want)
			}
			want := tc.round
			if want == (rec{}) {
				want = d(string(tc.f.Data)).ev(string(tc.f.Event)).retry(tc.f.Retry)
				if tc.id != "" {
					want = want.id(tc.id)
				}
			}
			if back := parseAll(strings.NewReader(tc.want), 0); !slices.Equal(back, []rec{want, eof}) {
				t.Errorf("parsing %q gives %v, want %v", tc.want, back, want)
			}
		})
	}
}

// TestAppendEventLong checks the cached LF scan over many lines of each kind.
func TestAppendEventLong(t *testing.T) {
	var data, want bytes.Buffer
	for i := range 3000 {
		line := strings.Repeat("x", i%7)
		data.WriteString(line)
		want.WriteString("data: " + line + "\n")
		data.WriteString([]string{"\n", "\r", "\r\n"}[i%3])
	}
	want.WriteString("data: \n\n")
	got := AppendEvent(nil, nil, &Frame{Data: data.Bytes(), Retry: -1})
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("long data with mixed breaks encoded wrong (len %d, want %d)", len(got), want.Len())
	}
}

func TestAppendComment(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"", ": \n\n"},
		{"heartbeat", ": heartbeat\n\n"},
		{"a\nb", ": a\n: b\n\n"},
		{"a\rb", ": a\n: b\n\n"},
		{"a\r\nb", ": a\n: b\n\n"},
		{"a\n\ndata: evil", ": a\n: \n: data: evil\n\n"},
		{"a\n", ": a\n: \n\n"},
	} {
		got := AppendComment([]byte("p"), tc.text)
		if string(got) != "p"+tc.want {
			t.Errorf("AppendComment(%q) = %q, want %q", tc.text, got[1:], tc.want)
		}
		// A comment block yields nothing, and does not swallow the next block.
		in := tc.want + "data: next\n\n"
		if back := parseAll(strings.NewReader(in), 0); !slices.Equal(back, []rec{d("next"), eof}) {
			t.Errorf("parsing %q gives %v", in, back)
		}
	}
}

func TestAppendRetry(t *testing.T) {
	for _, tc := range []struct {
		ms   int64
		want string
	}{
		{0, "retry: 0\n"},
		{3000, "retry: 3000\n"},
		{math.MaxInt64, "retry: 9223372036854775807\n"},
		{-1, ""},
		{math.MinInt64, ""},
	} {
		if got := AppendRetry([]byte("p"), tc.ms); string(got) != "p"+tc.want {
			t.Errorf("AppendRetry(%d) = %q, want %q", tc.ms, got[1:], tc.want)
		}
	}
	in := string(AppendRetry(nil, 2500)) + "\n"
	if back := parseAll(strings.NewReader(in), 0); !slices.Equal(back, []rec{noData().retry(2500), eof}) {
		t.Errorf("parsing %q gives %v", in, back)
	}
}
