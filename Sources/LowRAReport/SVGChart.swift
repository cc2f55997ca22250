import Foundation

/// A line chart written as a standalone SVG: linear or log10 axes with tick labels, one
/// polyline (with point markers) per series, solid or dashed, and a legend. Enough for the
/// experiment report's perplexity-vs-bits and loss-curve plots; no dependencies.
public struct SVGChart: Sendable {
    public enum Scale: Sendable { case linear, log10 }

    public struct Series: Sendable {
        public var name: String
        public var points: [(x: Double, y: Double)]
        public var color: String
        public var dashed: Bool
        public var markers: Bool
        /// An SVG stroke-dasharray overriding `dashed`'s pattern (e.g. "2 2").
        public var dashPattern: String?

        public init(
            name: String, points: [(x: Double, y: Double)], color: String, dashed: Bool = false, markers: Bool = true,
            dashPattern: String? = nil
        ) {
            self.name = name
            self.points = points
            self.color = color
            self.dashed = dashed
            self.markers = markers
            self.dashPattern = dashPattern
        }

        var dashAttribute: String {
            if let d = dashPattern { return " stroke-dasharray=\"\(d)\"" }
            return dashed ? " stroke-dasharray=\"6 4\"" : ""
        }
    }

    public var title: String
    public var xLabel: String
    public var yLabel: String
    public var yScale: Scale = .linear
    public var series: [Series] = []
    /// Horizontal reference lines (label, y, color), drawn dotted.
    public var references: [(label: String, y: Double, color: String)] = []
    public var width = 760.0
    public var height = 460.0
    /// Reverse the x axis (bits budgets read best-first, high to low, like the paper's tables).
    public var reverseX = false

    public init(title: String, xLabel: String, yLabel: String, yScale: Scale = .linear) {
        self.title = title
        self.xLabel = xLabel
        self.yLabel = yLabel
        self.yScale = yScale
    }

    /// A palette that stays distinguishable when printed.
    public static let palette = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#7f7f7f", "#bcbd22",
    ]

    /// An SVG document's opening: its size, a white background and the title centred at `titleX`.
    static func header(width: Double, height: Double, title: String, titleX: Double) -> String {
        """
        <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" \
        viewBox="0 0 \(Int(width)) \(Int(height))" font-family="Helvetica, Arial, sans-serif" font-size="12">
        <rect width="100%" height="100%" fill="white"/>
        <text x="\(titleX)" y="24" text-anchor="middle" font-size="15" \
        font-weight="bold">\(escape(title))</text>

        """
    }

    static func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static func fmt(_ v: Double) -> String {
        if v == 0 { return "0" }
        let a = abs(v)
        if a >= 1e5 || a < 1e-3 {
            return String(format: "%.0e", v).replacingOccurrences(of: "e+0", with: "e").replacingOccurrences(
                of: "e+", with: "e")
        }
        if a >= 100 || v == v.rounded() { return String(format: "%.0f", v) }
        return String(format: "%.3g", v)
    }

    /// About `count` round tick values covering [lo, hi].
    static func niceTicks(_ lo: Double, _ hi: Double, count: Int = 6) -> [Double] {
        guard hi > lo else { return [lo] }
        let raw = (hi - lo) / Double(count)
        let mag = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 2.5, 5, 10].map { $0 * mag }.first { $0 >= raw } ?? 10 * mag
        var t = ceil(lo / step) * step
        var out = [Double]()
        while t <= hi + step * 1e-9 {
            out.append(abs(t) < step * 1e-9 ? 0 : t)
            t += step
        }
        return out
    }

    public func render() -> String {
        let ml = 78.0, mr = 200.0, mt = 44.0, mb = 58.0  // margins; the legend sits on the right
        let pw = width - ml - mr, ph = height - mt - mb
        let pts = series.flatMap { $0.points }.filter {
            $0.x.isFinite && $0.y.isFinite && (yScale == .linear || $0.y > 0)
        }
        var xs = pts.map(\.x),
            ys = pts.map(\.y) + references.map(\.y).filter { $0.isFinite && (yScale == .linear || $0 > 0) }
        if xs.isEmpty { xs = [0, 1] }
        if ys.isEmpty { ys = [1, 10] }
        var (x0, x1) = (xs.min()!, xs.max()!)
        if x0 == x1 { (x0, x1) = (x0 - 0.5, x1 + 0.5) }
        let padX = (x1 - x0) * 0.04
        (x0, x1) = (x0 - padX, x1 + padX)
        var (y0, y1) = (ys.min()!, ys.max()!)
        func ty(_ y: Double) -> Double { yScale == .log10 ? log10(y) : y }
        var (ly0, ly1) = (ty(y0), ty(y1))
        if yScale == .log10 {
            ly0 = floor(ly0 * 2) / 2
            ly1 = ceil(ly1 * 2) / 2
            if ly1 - ly0 < 1 { ly1 = ly0 + 1 }
        } else {
            if y0 == y1 { (y0, y1) = (y0 - 1, y1 + 1) }
            let pad = (y1 - y0) * 0.05
            (ly0, ly1) = (y0 - pad, y1 + pad)
        }
        func px(_ x: Double) -> Double {
            let f = (x - x0) / (x1 - x0)
            return ml + (reverseX ? 1 - f : f) * pw
        }
        func py(_ y: Double) -> Double { mt + ph - (ty(y) - ly0) / (ly1 - ly0) * ph }

        var s = Self.header(width: width, height: height, title: title, titleX: ml + pw / 2)
        // Grid and ticks.
        let yTicks: [Double] =
            yScale == .log10
            ? stride(from: ceil(ly0), through: floor(ly1), by: max(1, floor((ly1 - ly0) / 8))).map { pow(10, $0) }
            : Self.niceTicks(ly0, ly1)
        for t in yTicks {
            let y = py(t)
            s += "<line x1=\"\(ml)\" y1=\"\(y)\" x2=\"\(ml + pw)\" y2=\"\(y)\" stroke=\"#e0e0e0\"/>\n"
            let label = yScale == .log10 ? Self.decade(t) : Self.fmt(t)
            s += "<text x=\"\(ml - 6)\" y=\"\(y + 4)\" text-anchor=\"end\">\(label)</text>\n"
        }
        let distinctX = Array(Set(xs)).sorted()
        let xTicks = distinctX.count <= 12 ? distinctX : Self.niceTicks(x0, x1)
        // Every tick gets a grid line; labels skip ticks too close to the last labelled one.
        var lastLabel = -Double.infinity
        for t in xTicks.sorted(by: { px($0) < px($1) }) {
            let x = px(t)
            s += "<line x1=\"\(x)\" y1=\"\(mt)\" x2=\"\(x)\" y2=\"\(mt + ph)\" stroke=\"#f0f0f0\"/>\n"
            let label = Self.fmt(t)
            guard x - lastLabel >= Double(label.count) * 7 + 8 else { continue }
            lastLabel = x
            s += "<text x=\"\(x)\" y=\"\(mt + ph + 18)\" text-anchor=\"middle\">\(label)</text>\n"
        }
        s += "<rect x=\"\(ml)\" y=\"\(mt)\" width=\"\(pw)\" height=\"\(ph)\" fill=\"none\" stroke=\"#333\"/>\n"
        s += "<text x=\"\(ml + pw / 2)\" y=\"\(height - 14)\" text-anchor=\"middle\">\(Self.escape(xLabel))</text>\n"
        s +=
            "<text transform=\"translate(18 \(mt + ph / 2)) rotate(-90)\" "
            + "text-anchor=\"middle\">\(Self.escape(yLabel))</text>\n"

        // Reference lines, then series.
        var legend = [(String, String, String, Bool)]()  // name, color, dash attribute, dotted
        for r in references where r.y.isFinite && (yScale == .linear || r.y > 0) {
            let y = py(r.y)
            s +=
                "<line x1=\"\(ml)\" y1=\"\(y)\" x2=\"\(ml + pw)\" y2=\"\(y)\" stroke=\"\(r.color)\" "
                + "stroke-width=\"1.5\" stroke-dasharray=\"2 3\"/>\n"
            legend.append((r.label, r.color, "", true))
        }
        for ser in series {
            let p = ser.points.filter { $0.x.isFinite && $0.y.isFinite && (yScale == .linear || $0.y > 0) }.sorted {
                $0.x < $1.x
            }
            guard !p.isEmpty else { continue }
            let path = p.map { String(format: "%.1f,%.1f", px($0.x), py($0.y)) }.joined(separator: " ")
            s +=
                "<polyline fill=\"none\" stroke=\"\(ser.color)\" stroke-width=\"2\"\(ser.dashAttribute) "
                + "points=\"\(path)\"/>\n"
            if ser.markers {
                for q in p {
                    s += String(
                        format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.2\" fill=\"%@\"/>\n", px(q.x), py(q.y),
                        ser.dashed ? "white" : ser.color)
                    if ser.dashed {
                        s += String(
                            format:
                                "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3.2\" fill=\"none\" stroke=\"%@\" "
                                + "stroke-width=\"1.5\"/>\n",
                            px(q.x), py(q.y), ser.color)
                    }
                }
            }
            legend.append((ser.name, ser.color, ser.dashAttribute, false))
        }
        // Legend.
        var ly = mt + 8
        for (name, color, dashed, dotted) in legend {
            let dash = dotted ? " stroke-dasharray=\"2 3\"" : dashed
            s +=
                "<line x1=\"\(ml + pw + 14)\" y1=\"\(ly)\" x2=\"\(ml + pw + 40)\" y2=\"\(ly)\" stroke=\"\(color)\" "
                + "stroke-width=\"2\"\(dash)/>\n"
            s += "<text x=\"\(ml + pw + 46)\" y=\"\(ly + 4)\">\(Self.escape(name))</text>\n"
            ly += 18
        }
        s += "</svg>\n"
        return s
    }

    static func decade(_ v: Double) -> String {
        let e = Int(log10(v).rounded())
        if e >= 0 && e <= 4 { return String(format: "%.0f", v) }
        return "1e\(e)"
    }
}
