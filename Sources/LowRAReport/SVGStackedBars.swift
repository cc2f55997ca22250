import Foundation

/// Horizontal stacked bars (one bar per label, one segment per component) as a standalone SVG,
/// with the total at the end of each bar and a legend: the memory breakdown plot.
public struct SVGStackedBars: Sendable {
    public var title: String
    public var unit: String
    public var components: [String]
    /// (bar label, one value per component).
    public var bars: [(label: String, values: [Double])]

    public init(title: String, unit: String, components: [String], bars: [(label: String, values: [Double])]) {
        self.title = title
        self.unit = unit
        self.components = components
        self.bars = bars
    }

    public func render() -> String {
        let ml = 110.0, mr = 90.0, mt = 44.0, barH = 26.0, gap = 10.0
        let legendH = Double(components.count) * 18 + 16
        let width = 860.0
        let height = mt + Double(bars.count) * (barH + gap) + 30 + legendH
        let pw = width - ml - mr
        let maxTotal = max(bars.map { $0.values.reduce(0, +) }.max() ?? 1, 1e-12)
        var s = SVGChart.header(width: width, height: height, title: title, titleX: width / 2)
        for (i, bar) in bars.enumerated() {
            let y = mt + Double(i) * (barH + gap)
            s +=
                "<text x=\"\(ml - 8)\" y=\"\(y + barH / 2 + 4)\" "
                + "text-anchor=\"end\">\(SVGChart.escape(bar.label))</text>\n"
            var x = ml
            for (j, v) in bar.values.enumerated() where v > 0 {
                let w = v / maxTotal * pw
                s += String(
                    format:
                        "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%@\"><title>%@: %.1f "
                        + "%@</title></rect>\n",
                    x, y, w, barH, SVGChart.palette[j % SVGChart.palette.count], SVGChart.escape(components[j]), v, unit
                )
                x += w
            }
            s += String(
                format: "<text x=\"%.1f\" y=\"%.1f\">%.0f %@</text>\n", x + 6, y + barH / 2 + 4,
                bar.values.reduce(0, +), unit)
        }
        var ly = mt + Double(bars.count) * (barH + gap) + 20
        for (j, name) in components.enumerated() {
            s +=
                "<rect x=\"\(ml)\" y=\"\(ly - 10)\" width=\"14\" height=\"12\" "
                + "fill=\"\(SVGChart.palette[j % SVGChart.palette.count])\"/>\n"
            s += "<text x=\"\(ml + 20)\" y=\"\(ly)\">\(SVGChart.escape(name))</text>\n"
            ly += 18
        }
        return s + "</svg>\n"
    }
}
