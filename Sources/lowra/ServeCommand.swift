import ArgumentParser
import Foundation
import Logging
import LowRAModel
import LowRAServe
import LowRATensor
import LowRATrain
import LowRAPipeline
import LowRAAdapters

/// `lowra serve`: the OpenAI-compatible server over one base and a shelf of adapters.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve a base and its shelf of adapters over an OpenAI-compatible HTTP API.",
        discussion: """
            POST /v1/chat/completions and /v1/completions (`model`: an adapter's name, name@version, or the base), \
            GET /v1/models, GET /v1/adapters/NAME (its card), POST /v1/adapters {"path": DIR} and \
            DELETE /v1/adapters/NAME while running, GET /health, GET /metrics (Prometheus). Every decode step runs \
            all active requests together, whatever their adapters.
            """)

    @OptionGroup var modelOptions: ModelOptions
    @OptionGroup var adapterOptions: AdapterOptions
    @Option(help: "A directory whose subdirectories are adapters (admitted by their cards).") var shelf: String?
    @Option(help: "Address to listen on.") var host = "127.0.0.1"
    @Option(help: "Port (0: any free one; the bound port is printed).") var port = 8080
    @Option(
        help: """
            Resident adapters' memory at most, in MB, compressed adapters' expansions in use included (least \
            recently used leave first).
            """
    )
    var maxResidentMb = 1024
    @Option(help: "Refuse adapters larger than this in memory, in MB.") var maxAdapterMb = 512
    @Option(help: "Sequences decoded together at most.") var maxBatch = 16
    @Option(help: "Request bodies larger than this are refused, in KB.") var maxBodyKb = 1024
    @Option(help: "max_tokens when a request gives none.") var defaultMaxTokens = 256
    @Option(help: "Requests that may wait for a decode slot; more get 429.") var maxWaiting = 64
    @Option(help: "The name the base answers to (default: the model's file or directory name; \"base\" always works).")
    var baseName: String?
    @OptionGroup var admission: AdmissionOptions
    @Option(
        help: ArgumentHelp(
            "Serve only adapters signed by a key in this directory (*.pub), their files unchanged since.",
            discussion: "Checked when an adapter is admitted and each time it is loaded; others get 403 and the reason."
        ))
    var trustedKeys: String?
    @Option(help: "Keep this adapter (every version) in memory from the start, never evicted (repeatable).")
    var pin: [String] = []

    func run() throws {
        guard (0...65535).contains(port) else { throw ValidationError("--port must be in 0...65535") }
        guard maxBatch >= 1, maxBatch <= 256 else { throw ValidationError("--max-batch must be in 1...256") }
        guard maxWaiting >= 0 else { throw ValidationError("--max-waiting must not be negative") }
        guard maxResidentMb >= 1, maxAdapterMb >= 1, maxBodyKb >= 1, defaultMaxTokens >= 1 else {
            throw ValidationError("sizes and --default-max-tokens must be positive")
        }
        var loaded = try modelOptions.load()
        let (baseAdapter, adapterLine) = try adapterOptions.load(for: &loaded, tunedBase: false)
        printErr("the base runs with " + (adapterLine ?? "no adapter"))
        let tiles = loaded.model.weights.prepareDecode()
        printErr(
            "kernels: \(KernelPath.variant()), \(loaded.model.activations.rawValue) activations, \(workerCount) threads"
                + (tiles > 0 ? ", decode tiles \(tiles >> 20) MB" : ""))
        let shelf = try AdapterShelf(
            directory: shelf, config: loaded.config, fingerprint: try baseFingerprint(modelOptions.model),
            minEvalTokens: admission.minEvalTokens, capBytes: maxResidentMb << 20, maxAdapterBytes: maxAdapterMb << 20,
            trustedKeys: try trustedKeys.map { try PublicSigningKey.loadAll($0) })
        for e in shelf.all {
            let signed = e.signer.map { ", signed by \($0.name) (\($0.keyID))" } ?? ""
            printErr("adapter \(e.id): \(e.card.task) (\(e.bytes >> 20) MB\(signed))")
        }
        for r in shelf.refused { printErr("refused \(r.name) (\(r.dir)): \(r.reason)") }
        if !pin.isEmpty {
            try shelf.pin(pin)
            printErr("pinned: " + pin.joined(separator: ", "))
        }
        var o = ServeOptions()
        (o.host, o.port, o.maxBatch) = (host, port, maxBatch)
        (o.maxBodyBytes, o.defaultMaxTokens, o.maxWaiting) = (maxBodyKb << 10, defaultMaxTokens, maxWaiting)
        o.baseName =
            baseName
            ?? (((modelOptions.model as NSString).standardizingPath as NSString).lastPathComponent as NSString)
            .deletingPathExtension
        var logger = Logger(label: "lowra.serve")
        logger.logLevel = .info
        let server = InferenceServer(loaded: loaded, shelf: shelf, options: o, baseAdapter: baseAdapter, logger: logger)
        let host = self.host
        let count = shelf.all.count
        let name = o.baseName
        // The root command is synchronous: the server runs as a task while this thread waits.
        let done = DispatchSemaphore(value: 0)
        let failure = Box()
        Task {
            do {
                try await server.run { port in
                    printErr("listening on http://\(host):\(port) (base \(name), \(count) adapters)")
                }
            } catch {
                failure.error = error
            }
            done.signal()
        }
        done.wait()
        if let e = failure.error { throw e }
    }

    final class Box: @unchecked Sendable { var error: (any Error)? }
}
