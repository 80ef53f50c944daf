package main

import "bytes"

// The report file holds one section per benchmark between markers, so a run
// with -only replaces its own section and keeps the others as they were
// measured, each with its own date and command.
func sectionBegin(name string) string { return "<!-- bench:" + name + " begin -->\n" }
func sectionEnd(name string) string   { return "<!-- bench:" + name + " end -->\n" }

const reportIntro = "Each section below was measured by the command in its own table; `go run ./bench -only NAME -out bench/RESULTS.md` " +
	"measures one section again and keeps the others as they are.\n"

// mergeReport returns the report with the sections in fresh (by benchmark
// name) and, for benchmarks not in fresh, the sections of old, the report as
// it was; a benchmark in neither is left out.
func mergeReport(old []byte, fresh map[string][]byte) []byte {
	var b bytes.Buffer
	b.WriteString("# Fabric benchmarks\n\n")
	b.WriteString(reportIntro)
	for _, bm := range benchmarks {
		body, ok := fresh[bm.name]
		if !ok {
			body, ok = oldSection(old, bm.name)
		}
		if !ok {
			continue
		}
		b.WriteString("\n")
		b.WriteString(sectionBegin(bm.name))
		b.Write(bytes.TrimSpace(body))
		b.WriteString("\n")
		b.WriteString(sectionEnd(bm.name))
	}
	return b.Bytes()
}

// oldSection returns what lies between name's markers in report.
func oldSection(report []byte, name string) ([]byte, bool) {
	_, rest, ok := bytes.Cut(report, []byte(sectionBegin(name)))
	if !ok {
		return nil, false
	}
	body, _, ok := bytes.Cut(rest, []byte(sectionEnd(name)))
	return body, ok
}
