#if canImport(CCbc)
import CCbc
#endif
import LowRATensor

/// A small mixed-integer linear program, solved with COIN-OR CBC through its C interface.
/// Minimizes Σ obj·x subject to sparse rows (≤, ≥ or =) and variable bounds. The package builds
/// without CBC where it is not installed (Package.swift); `solve` then says how to add it.
public struct IntegerProgram {
    /// Whether this build has CBC.
    #if canImport(CCbc)
    public static let available = true
    #else
    public static let available = false
    #endif

    public enum Sense: UInt8 { case lessEqual = 76, greaterEqual = 71, equal = 69 }  // 'L', 'G', 'E'

    public struct Solution {
        public var values: [Double]
        public var objective: Double
        /// Best lower bound CBC proved (equals `objective` when optimal).
        public var bound: Double
        public var optimal: Bool
    }

    private var lower = [Double](), upper = [Double](), objective = [Double](), integer = [Bool]()
    private var rows = [(cols: [Int32], coefs: [Double], sense: Sense, rhs: Double)]()

    public init() {}

    public var variableCount: Int { objective.count }

    /// Adds a variable; returns its index.
    @discardableResult
    public mutating func addVariable(lower lb: Double = 0, upper ub: Double, cost: Double, integer isInt: Bool = true)
        -> Int
    {
        lower.append(lb)
        upper.append(ub)
        objective.append(cost)
        integer.append(isInt)
        return objective.count - 1
    }

    public mutating func addConstraint(_ terms: [(Int, Double)], _ sense: Sense, _ rhs: Double) {
        rows.append((terms.map { Int32($0.0) }, terms.map(\.1), sense, rhs))
    }

    /// Solves; `seconds` bounds the search (the best solution found so far is returned).
    public func solve(seconds: Double = 60) throws -> Solution {
        #if canImport(CCbc)
        guard let model = Cbc_newModel() else { throw LowRAError(.io, "CBC: cannot create a model") }
        defer { Cbc_deleteModel(model) }
        Cbc_setLogLevel(model, 0)
        for i in 0..<objective.count {
            Cbc_addCol(model, "", lower[i], upper[i], objective[i], integer[i] ? 1 : 0, 0, nil, nil)
        }
        for r in rows {
            Cbc_addRow(model, "", Int32(r.cols.count), r.cols, r.coefs, CChar(bitPattern: r.sense.rawValue), r.rhs)
        }
        Cbc_setObjSense(model, 1)
        Cbc_setMaximumSeconds(model, seconds)
        let status = Cbc_solve(model)
        guard let sol = Cbc_getColSolution(model), Cbc_isProvenInfeasible(model) == 0 else {
            throw LowRAError(.invalidArgument, "CBC: the problem is infeasible (status \(status))")
        }
        let values = (0..<objective.count).map { sol[$0] }
        return Solution(
            values: values, objective: Cbc_getObjValue(model), bound: Cbc_getBestPossibleObjValue(model),
            optimal: Cbc_isProvenOptimal(model) != 0)
        #else
        throw LowRAError(
            .unsupported,
            "this build has no COIN-OR CBC, which the ILP assigner needs (install coinor-libcbc-dev or Homebrew's cbc "
                + "and rebuild; the default exact assigner needs none)")
        #endif
    }
}
