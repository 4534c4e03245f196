package node

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"
)

// Container logs are kept as the CRI runtimes keep them, one record per
// line: "<RFC 3339 time> <stdout|stderr> <F|P> <content>", P marking a piece
// of a line longer than a record. That gives kubectl logs its --timestamps
// and --since.

const maxLogRecord = 16 * 1024

// containerLog copies a container's stdout and stderr pipes into its log.
type containerLog struct {
	mu   sync.Mutex
	f    *os.File
	wg   sync.WaitGroup
	done chan struct{} // closed once both streams ended and the file is closed
}

// startContainerLog opens path for the log and returns the pipe ends the
// container writes to; the caller closes them once the container started.
func startContainerLog(path string) (l *containerLog, stdout, stderr *os.File, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, nil, nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		f.Close()
		return nil, nil, nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		f.Close()
		outR.Close()
		outW.Close()
		return nil, nil, nil, err
	}
	l = &containerLog{f: f, done: make(chan struct{})}
	l.wg.Add(2)
	go l.copy(outR, "stdout")
	go l.copy(errR, "stderr")
	go func() {
		l.wg.Wait()
		l.f.Close()
		close(l.done)
	}()
	return l, outW, errW, nil
}

func (l *containerLog) copy(r *os.File, stream string) {
	defer l.wg.Done()
	defer r.Close()
	br := bufio.NewReaderSize(r, maxLogRecord)
	for {
		line, err := br.ReadSlice('\n')
		switch {
		case len(line) > 0 && line[len(line)-1] == '\n':
			l.write(stream, "F", line[:len(line)-1])
		case errors.Is(err, bufio.ErrBufferFull):
			l.write(stream, "P", line)
		case len(line) > 0: // the stream ended inside a line
			l.write(stream, "F", line)
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			return
		}
	}
}

func (l *containerLog) write(stream, tag string, content []byte) {
	rec := make([]byte, 0, len(content)+64)
	rec = time.Now().UTC().AppendFormat(rec, time.RFC3339Nano)
	rec = append(rec, ' ')
	rec = append(rec, stream...)
	rec = append(rec, ' ')
	rec = append(rec, tag...)
	rec = append(rec, ' ')
	rec = append(rec, content...)
	rec = append(rec, '\n')
	l.mu.Lock()
	_, _ = l.f.Write(rec)
	l.mu.Unlock()
}

// wait waits up to timeout for everything the container wrote to be in the
// log (a process that escaped the container could keep a pipe open).
func (l *containerLog) wait(timeout time.Duration) {
	select {
	case <-l.done:
	case <-time.After(timeout):
	}
}

// logRecord is one parsed record.
type logRecord struct {
	time    time.Time
	stream  string
	full    bool // the content ends a line
	content []byte
}

func parseLogRecord(line []byte) (logRecord, bool) {
	line = bytes.TrimSuffix(line, []byte("\n"))
	ts, rest, ok1 := bytes.Cut(line, []byte(" "))
	stream, rest, ok2 := bytes.Cut(rest, []byte(" "))
	tag, content, ok3 := bytes.Cut(rest, []byte(" "))
	if !ok1 || !ok2 {
		return logRecord{}, false
	}
	if !ok3 { // an empty line written as "... F" without the separator
		tag, content = rest, nil
	}
	t, err := time.Parse(time.RFC3339Nano, string(ts))
	if err != nil {
		return logRecord{}, false
	}
	return logRecord{time: t, stream: string(stream), full: string(tag) != "P", content: content}, true
}

// logOptions select and format records, as PodLogOptions do.
type logOptions struct {
	since      time.Time // zero: everything
	timestamps bool
}

// writeRecord writes one record's content as kubectl logs shows it.
func (o logOptions) writeRecord(w io.Writer, r logRecord) error {
	if !o.since.IsZero() && r.time.Before(o.since) {
		return nil
	}
	var b []byte
	if o.timestamps {
		b = r.time.AppendFormat(b, time.RFC3339Nano)
		b = append(b, ' ')
	}
	b = append(b, r.content...)
	if r.full {
		b = append(b, '\n')
	}
	_, err := w.Write(b)
	return err
}

// tailLog returns the content of the log's last n records, at most maxBytes.
func tailLog(path string, n int64, maxBytes int) string {
	var out bytes.Buffer
	for line := range bytes.Lines([]byte(tailFile(path, n, 1<<20))) {
		if r, ok := parseLogRecord(line); ok {
			_ = logOptions{}.writeRecord(&out, r)
		}
	}
	b := out.Bytes()
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	return string(b)
}

func (n *Node) serveLogs(w http.ResponseWriter, r *http.Request) {
	pod := r.PathValue("pod")
	pw, c, err := n.lookup(r.PathValue("ns"), pod, r.PathValue("container"), "")
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	follow := q.Get("follow") == "true" || q.Get("follow") == "1"
	previous := q.Get("previous") == "true" || q.Get("previous") == "1"
	tail := int64(-1)
	if s := q.Get("tailLines"); s != "" {
		if tail, err = strconv.ParseInt(s, 10, 64); err != nil || tail < 0 {
			http.Error(w, "invalid tailLines", http.StatusBadRequest)
			return
		}
	}
	limit := int64(-1)
	if s := q.Get("limitBytes"); s != "" {
		if limit, err = strconv.ParseInt(s, 10, 64); err != nil || limit <= 0 {
			http.Error(w, "invalid limitBytes", http.StatusBadRequest)
			return
		}
	}

	opts := logOptions{timestamps: q.Get("timestamps") == "true" || q.Get("timestamps") == "1"}
	if s := q.Get("sinceSeconds"); s != "" {
		secs, err := strconv.ParseInt(s, 10, 64)
		if err != nil || secs <= 0 {
			http.Error(w, "invalid sinceSeconds", http.StatusBadRequest)
			return
		}
		opts.since = time.Now().Add(-time.Duration(secs) * time.Second)
	}
	if s := q.Get("sinceTime"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			http.Error(w, "invalid sinceTime", http.StatusBadRequest)
			return
		}
		opts.since = t
	}
	finished := false

	pw.mu.Lock()
	var path string
	var done chan struct{}
	switch {
	case previous:
		if len(c.logPaths) < 2 {
			pw.mu.Unlock()
			http.Error(w, fmt.Sprintf("previous terminated container %q in pod %q not found", c.spec.Name, pod), http.StatusBadRequest)
			return
		}
		path = c.logPaths[len(c.logPaths)-2]
		follow = false
	case len(c.logPaths) == 0:
		reason := c.waiting.Reason
		pw.mu.Unlock()
		http.Error(w, fmt.Sprintf("container %q in pod %q is waiting to start: %s", c.spec.Name, pod, reason), http.StatusBadRequest)
		return
	default:
		path = c.logPaths[len(c.logPaths)-1]
		done = c.done
	}
	pw.mu.Unlock()

	f, err := os.Open(path)
	if err != nil {
		writeError(w, err)
		return
	}
	defer f.Close()
	if tail >= 0 {
		if err := seekTail(f, tail); err != nil {
			writeError(w, err)
			return
		}
	}
	w.Header().Set("Content-Type", "text/plain")
	var out io.Writer = w
	if limit > 0 {
		out = &limitWriter{w: w, n: limit}
	}
	rc := http.NewResponseController(w)
	rd := bufio.NewReaderSize(f, 64*1024)
	var partial []byte // a record read before it was completely written
	var tick *time.Ticker
	for {
		line, rerr := rd.ReadBytes('\n')
		if len(line) > 0 {
			if line[len(line)-1] != '\n' {
				partial = append(partial, line...)
			} else {
				if partial != nil {
					line, partial = append(partial, line...), nil
				}
				if rec, ok := parseLogRecord(line); ok {
					if err := opts.writeRecord(out, rec); err != nil {
						return
					}
				}
				if follow && rd.Buffered() == 0 {
					_ = rc.Flush()
				}
			}
		}
		if rerr == nil {
			continue
		}
		if rerr != io.EOF || !follow || finished {
			return
		}
		if tick == nil {
			tick = time.NewTicker(followPoll)
			defer tick.Stop()
		}
		select {
		case <-done:
			// The container ended and its log is complete: read the rest.
			finished = true
		case <-r.Context().Done():
			return
		case <-tick.C:
		}
	}
}

var errLimit = errors.New("limit reached")

type limitWriter struct {
	w io.Writer
	n int64
}

func (l *limitWriter) Write(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errLimit
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.w.Write(p)
	l.n -= int64(n)
	if err == nil && l.n <= 0 {
		err = errLimit
	}
	return n, err
}

// seekTail positions f at the start of its last n lines.
func seekTail(f *os.File, n int64) error {
	end, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return err
	}
	if n == 0 {
		return nil
	}
	const chunk = 8192
	pos := end
	lines := int64(0)
	buf := make([]byte, chunk)
	first := true
	for pos > 0 {
		size := int64(chunk)
		if pos < size {
			size = pos
		}
		pos -= size
		if _, err := f.ReadAt(buf[:size], pos); err != nil && err != io.EOF {
			return err
		}
		b := buf[:size]
		if first && len(b) > 0 && b[len(b)-1] == '\n' {
			b = b[:len(b)-1] // the final newline ends the last line
		}
		first = false
		for i := len(b) - 1; i >= 0; i-- {
			if b[i] == '\n' {
				lines++
				if lines == n {
					_, err := f.Seek(pos+int64(i)+1, io.SeekStart)
					return err
				}
			}
		}
	}
	_, err = f.Seek(0, io.SeekStart)
	return err
}

// tailFile returns up to the last n lines (and at most max bytes) of a file.
func tailFile(path string, n int64, maxBytes int) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if err := seekTail(f, n); err != nil {
		return ""
	}
	b, _ := io.ReadAll(f)
	if len(b) > maxBytes {
		b = b[len(b)-maxBytes:]
	}
	return string(bytes.TrimRight(b, "\x00"))
}
