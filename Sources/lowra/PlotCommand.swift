import ArgumentParser
import Foundation
import LowRAIO
import LowRAReport
import LowRATensor

/// Training curves of one or more fine-tuning runs, or the gaps of experiments, as an SVG.
struct PlotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plot",
        abstract: "Plot training and validation loss from finetune runs (train_log.csv) as SVG.",
        discussion: """
            With --gap: each experiment's (lowra experiment --out DIR) perplexity after fine-tuning as a multiple \
            of its full-precision LoRA row against the bit budget, one colour per experiment (NAME=DIR names it).
            """)

    @Argument(help: "finetune output directories (or train_log.csv files); with --gap, experiment directories.")
    var runs: [String]
    @Option(help: "Output SVG file.") var out: String
    @Option(help: "Running mean over N steps for the training loss.") var smooth: Int = 10
    @Flag(help: "Plot experiments' perplexity after fine-tuning / full-precision LoRA's against the bits.")
    var gap = false

    func run() throws {
        guard !runs.isEmpty else { throw ValidationError("give at least one run") }
        guard smooth >= 1 else { throw ValidationError("--smooth must be positive") }
        if gap {
            let experiments = try runs.map { arg -> (name: String, spec: ExperimentSpec, cells: [ExperimentCell]) in
                let parts = arg.split(separator: "=", maxSplits: 1).map(String.init)
                let dir = parts.last!
                let file = (dir as NSString).appendingPathComponent("results.json")
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw LowRAError(.io, "\(file): cannot read (an experiment's --out holds results.json)")
                }
                guard let r = try? JSONDecoder().decode(ExperimentResults.self, from: data) else {
                    throw LowRAError.malformed(file, "not a LowRA experiment's results.json")
                }
                return (parts.count == 2 ? parts[0] : (dir as NSString).lastPathComponent, r.spec, r.cells)
            }
            try writeAtomically(Data(ExperimentReport.gapPlot(runs: experiments).utf8), to: out)
            print("wrote \(out)")
            return
        }
        let svg = try trainingCurves(
            runs.map { r in
                let file = r.hasSuffix(".csv") ? r : (r as NSString).appendingPathComponent("train_log.csv")
                guard let text = try? String(contentsOfFile: file, encoding: .utf8) else {
                    throw LowRAError(.io, "\(file): cannot read")
                }
                return ((r as NSString).lastPathComponent, text)
            }, smooth: smooth)
        try writeAtomically(Data(svg.utf8), to: out)
        print("wrote \(out)")
    }
}

/// Training loss (running mean) as lines and validation loss as dashed lines with markers, one
/// colour per run, from `train_log.csv` texts.
func trainingCurves(_ logs: [(name: String, csv: String)], smooth: Int) throws -> String {
    var chart = SVGChart(title: "Fine-tuning loss", xLabel: "step", yLabel: "loss (nats/token)")
    for (i, (name, csv)) in logs.enumerated() {
        let lines = csv.split(separator: "\n").map {
            $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        }
        guard let header = lines.first, let si = header.firstIndex(of: "step"),
            let ti = header.firstIndex(of: "train_loss"),
            let vi = header.firstIndex(of: "valid_loss")
        else { throw LowRAError.malformed(name, "not a LowRA train_log.csv") }
        var train = [(x: Double, y: Double)](), valid = [(x: Double, y: Double)]()
        for row in lines.dropFirst() where row.count == header.count {
            guard let step = Double(row[si]) else { continue }
            if let t = Double(row[ti]) { train.append((step, t)) }
            if let v = Double(row[vi]) { valid.append((step, v)) }
        }
        let smoothed = train.indices.map { j -> (x: Double, y: Double) in
            let w = train[max(0, j - smooth + 1)...j]
            return (train[j].x, w.reduce(0) { $0 + $1.y } / Double(w.count))
        }
        let color = SVGChart.palette[i % SVGChart.palette.count]
        chart.series.append(
            .init(name: "\(name) train (mean of \(smooth))", points: smoothed, color: color, markers: false))
        if !valid.isEmpty {
            chart.series.append(.init(name: "\(name) valid", points: valid, color: color, dashed: true))
        }
    }
    return chart.render()
}
