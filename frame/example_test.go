package frame_test

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/lastevent/lastevent/frame"
)

func ExampleParser() {
	stream := "\xEF\xBB\xBF: hello\r\nid: 1\r\nevent: add\r\ndata: a\r\ndata: b\r\n\r\nretry: 3000\n\ndata: cut by EOF\n"
	p := frame.NewParser(strings.NewReader(stream), 0)
	for {
		f, err := p.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println("error:", err)
			return
		}
		fmt.Printf("dispatch=%v event=%q data=%q id=%q(%v) retry=%d\n",
			f.Dispatch, f.Event, f.Data, f.ID, f.HasID, f.Retry)
	}
	// Output:
	// dispatch=true event="add" data="a\nb" id="1"(true) retry=-1
	// dispatch=false event="" data="" id=""(false) retry=3000
}

func ExampleAppendEvent() {
	f := &frame.Frame{Event: []byte("add"), Data: []byte("a\nb"), Retry: -1}
	buf := make([]byte, 0, 128)
	buf = frame.AppendEvent(buf, []byte("42"), f)
	buf = frame.AppendComment(buf, "heartbeat")
	os.Stdout.Write(buf)
	// Output:
	// id: 42
	// event: add
	// data: a
	// data: b
	//
	// : heartbeat
}
