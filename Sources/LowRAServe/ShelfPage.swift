import Foundation
import LowRAAdapters
import LowRATensor

/// Per-adapter request counts, generated tokens and latencies (the last 1,000 requests each), for
/// the shelf page's p50/p99; Prometheus keeps the histograms.
final class AdapterStats: @unchecked Sendable {
    private let lock = NSLock()
    private var requests = [String: Int]()
    private var tokens = [String: Int]()
    private var latencies = [String: [Double]]()
    static let kept = 1000

    func record(_ label: String, tokens n: Int, seconds: Double) {
        lock.withLock {
            requests[label, default: 0] += 1
            tokens[label, default: 0] += n
            var l = latencies[label] ?? []
            if l.count == Self.kept { l.removeFirst() }
            l.append(seconds)
            latencies[label] = l
        }
    }

    /// requests, tokens, p50 and p99 latency in milliseconds (nil before the first request).
    func summary(_ label: String) -> [String: Any] {
        lock.withLock {
            let l = (latencies[label] ?? []).sorted()
            func q(_ p: Double) -> Any { l.isEmpty ? NSNull() : 1000 * l[min(l.count - 1, Int(p * Double(l.count)))] }
            return ["requests": requests[label] ?? 0, "tokens": tokens[label] ?? 0, "p50_ms": q(0.5), "p99_ms": q(0.99)]
        }
    }
}

extension InferenceServer {
    /// What the shelf page shows (`GET /v1/shelf`): the base, every served adapter with its card,
    /// residency and live numbers, and the adapters the shelf refuses with the reason.
    func shelfState() throws -> [String: Any] {
        let q = loaded.quantManifest?.report
        let enc = JSONEncoder()
        var adapters = [[String: Any]]()
        let usage = Dictionary(uniqueKeysWithValues: shelf.usage.map { ($0.id, $0) })
        for e in shelf.all {
            let u = usage[e.id]
            adapters.append([
                "id": e.id, "name": e.card.name, "version": e.card.version, "admissible": true,
                "state": u?.resident == true ? (e.compressionBits != nil ? "compressed" : "resident") : "on disk",
                "pinned": u?.pinned ?? false, "bytes": e.bytes,
                "signed_by": e.signer.map { "\($0.name) (\($0.keyID))" } ?? NSNull(),
                "card": try JSONSerialization.jsonObject(with: try enc.encode(e.card)),
                "metrics": stats.summary(e.id),
            ])
        }
        return [
            "base": [
                "name": options.baseName, "path": loaded.path, "code_bits": q?.codeBitsPerParam ?? NSNull(),
                "method": q.map { $0.method.rawValue } ?? NSNull(), "fingerprint": shelf.fingerprint,
                "resident_bytes": MemoryStats.current().residentBytes, "metrics": stats.summary(options.baseName),
            ],
            "adapters": adapters,
            "refused": shelf.refused.map { ["name": $0.name, "path": $0.dir, "reason": $0.reason] },
        ]
    }

    /// The shelf page (`GET /`): plain HTML, CSS and JavaScript compiled into the binary, nothing
    /// fetched from elsewhere. It reads `/v1/shelf` every few seconds and chats through
    /// `/v1/chat/completions` (streamed).
    static let shelfPage = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><title>LowRA shelf</title>
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <style>
        body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#1d2430}
        header{background:#1d2430;color:#fff;padding:12px 20px}header h1{font-size:18px;margin:0}
        main{display:grid;grid-template-columns:minmax(0,3fr) minmax(280px,1fr);gap:16px;padding:16px 20px}
        section{background:#fff;border:1px solid #dde1e7;border-radius:6px;padding:12px 14px;margin-bottom:16px}
        h2{font-size:15px;margin:0 0 8px}table{border-collapse:collapse;width:100%}
        td,th{border-bottom:1px solid #eceff3;padding:6px 6px;text-align:left;vertical-align:top}
        th{font-size:12px;color:#5a6473;font-weight:600}.muted{color:#6b7483;font-size:12px}
        .tag{display:inline-block;border-radius:3px;padding:0 5px;font-size:12px;background:#e8f0fe;color:#1a56c5}
        .refused{color:#a32020}.ok{color:#17803d}textarea,select,input{width:100%;box-sizing:border-box;margin:4px 0}
        #answer{white-space:pre-wrap;background:#f6f7f9;border-radius:4px;padding:8px;min-height:60px}
        </style></head><body>
        <header><h1>LowRA shelf</h1><div id="base" class="muted">loading…</div></header>
        <main><div>
        <section><h2>Adapters</h2><table id="adapters"><thead><tr><th>adapter</th><th>card</th>
        <th>evaluations</th><th>state</th><th>requests · tokens · p50 / p99</th></tr></thead><tbody></tbody></table>
        </section>
        <section><h2>Refused</h2><table id="refused"><tbody></tbody></table></section>
        </div><div><section><h2>Chat</h2>
        <label>model <select id="model"></select></label>
        <label>max tokens <input id="max" type="number" value="48" min="1"></label>
        <textarea id="prompt" rows="3" placeholder="Say something"></textarea>
        <button id="send">Send</button><div id="answer" data-done="false"></div></section></div></main>
        <script>
        const $ = s => document.querySelector(s);
        const entities = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"};
        const esc = s => String(s).replace(/[&<>"']/g, c => entities[c]);
        function plot(evals) {
          if (!evals.length) return '<span class="muted">none</span>';
          const w = 160, bh = 14, max = Math.max(...evals.map(e => Math.log(e.perplexity))) || 1;
          let s = `<svg width="${w + 160}" height="${evals.length * (bh + 4)}" role="img">`;
          evals.forEach((e, i) => {
            const len = Math.max(2, w * Math.log(e.perplexity) / max), y = i * (bh + 4);
            const color = e.role === 'task' ? '#4a7bd0' : '#d08a4a';
            s += `<rect x="0" y="${y}" width="${len}" height="${bh}" fill="${color}">`
              + `<title>${esc(e.dataset.file)}</title></rect><text x="${len + 4}" y="${y + 11}" font-size="11">`
              + `${esc(e.role)} ${e.perplexity.toFixed(1)} · ${e.tokens} tok</text>`;
          });
          return s + '</svg>';
        }
        const ms = v => v === null ? '–' : v.toFixed(0) + ' ms';
        async function refresh() {
          const s = await (await fetch('/v1/shelf')).json(), b = s.base;
          $('#base').textContent = `base ${b.name} · ${b.method || 'unquantized'}` +
            (b.code_bits ? ` ${b.code_bits.toFixed(2)} code bits` : '') +
            ` · fingerprint ${b.fingerprint.slice(0, 12)}… · ${(b.resident_bytes / 1e6).toFixed(0)} MB resident`;
          $('#adapters tbody').innerHTML = s.adapters.map(a => `<tr data-adapter="${esc(a.name)}">
            <td><b>${esc(a.name)}</b>@${esc(a.version)}<br><span class="ok">admissible</span>
            ${a.pinned ? '<span class="tag">pinned</span>' : ''}${a.signed_by ? '<br><span class="muted">signed by '
              + esc(a.signed_by) + '</span>' : ''}</td>
            <td>${esc(a.card.task)}<br><span class="muted">owner ${esc(a.card.owner)} · rank ${a.card.rank}
            ${a.card.retire_after ? ' · retire after ' + esc(a.card.retire_after) : ''}
            ${a.card.training_data ? '<br>data ' + esc(a.card.training_data.file.split('/').pop()) : ''}</span></td>
            <td>${plot(a.card.evaluations)}</td><td>${esc(a.state)}</td>
            <td>${a.metrics.requests} · ${a.metrics.tokens} ·
            ${ms(a.metrics.p50_ms)} / ${ms(a.metrics.p99_ms)}</td></tr>`)
            .join('');
          $('#refused tbody').innerHTML = s.refused.length ? s.refused.map(r => `<tr data-refused="${esc(r.name)}">
            <td><b>${esc(r.name)}</b></td><td class="refused">${esc(r.reason)}</td></tr>`).join('')
            : '<tr><td class="muted">none</td></tr>';
          const sel = $('#model'), cur = sel.value;
          sel.innerHTML = [`<option value="base">base</option>`].concat(s.adapters.map(a =>
            `<option value="${esc(a.id)}">${esc(a.id)}</option>`)).join('');
          if (cur) sel.value = cur;
        }
        $('#send').onclick = async () => {
          const out = $('#answer');
          out.textContent = ''; out.dataset.done = 'false';
          const r = await fetch('/v1/chat/completions', {method: 'POST', headers: {'Content-Type': 'application/json'},
            body: JSON.stringify({model: $('#model').value, stream: true, temperature: 0,
              max_tokens: Number($('#max').value), messages: [{role: 'user', content: $('#prompt').value}]})});
          if (!r.ok) { out.textContent = (await r.json()).error.message; out.dataset.done = 'error'; return; }
          const reader = r.body.getReader(), dec = new TextDecoder();
          let buf = '';
          for (;;) {
            const {value, done} = await reader.read();
            if (done) break;
            buf += dec.decode(value, {stream: true});
            let i;
            while ((i = buf.indexOf('\\n\\n')) >= 0) {
              const ev = buf.slice(0, i); buf = buf.slice(i + 2);
              if (!ev.startsWith('data: ')) continue;
              const data = ev.slice(6);
              if (data === '[DONE]') { out.dataset.done = 'true'; refresh(); continue; }
              const d = JSON.parse(data).choices[0];
              if (d && d.delta && d.delta.content) out.textContent += d.delta.content;
            }
          }
        };
        refresh(); setInterval(refresh, 5000);
        </script></body></html>
        """
}
