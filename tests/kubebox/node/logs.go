package node

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
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
