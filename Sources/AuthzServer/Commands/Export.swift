import AuthzEngine
import AuthzIndex
import AuthzModel
import AuthzWire
import NIOConcurrencyHelpers
import NIOCore

/// Export: one tenant or all as JSON Lines, on the reader pool; whole (`Call.export`) or a page
/// at a time from one LMDB snapshot (`Call.exportPage`, `ExportSessions`). Admin keys export
/// their tenant (no tenant named: theirs); credential secrets only for keys that may read them
/// (`secretsField`).
enum ExportCommand: Command {
    static let kind = CallKind.export

    static func lane(_ call: Call) -> Lane { .reader }

    static func authorize(_ caller: Caller, _ call: Call) -> AuthzError? {
        let tenant: ID?
        switch call {
        case .export(let t, _), .exportPage(let t, _, _, _): tenant = t
        default: return mismatch(call)
        }
        switch caller.role {
        case .admin: return tenant.map { caller.sameTenant($0, "export.tenant_id") } ?? nil
        case .checker, .operator, .gateway: return caller.refused(call)
        }
    }

    static func readTenants(_ call: Call) -> [ID]? {
        switch call {
        case .export(let t?, _), .exportPage(let t?, _, _, _): return [t]
        case .export, .exportPage: return []
        default: return nil
        }
    }

    static func secretsField(_ call: Call) -> String? {
        switch call {
        case .export(_, true), .exportPage(_, true, _, _): return "export.include_secrets"
        default: return nil
        }
    }

    static func run(_ call: Call, on d: Dispatcher, as principal: Principal, from peer: PeerInfo) throws -> Reply {
        switch call {
        case .exportPage(let t, let secrets, let size, let token):
            return try d.exports.page(tenant: t ?? principal.tenant, includeSecrets: secrets, pageSize: size, token: token, principal: principal, on: d)
        case .export(let t, let secrets):
            let r = try d.engine.exportJSONL(tenant: t ?? principal.tenant, includeSecrets: secrets)
            return .export(r.bytes, revision: r.revision)
        default:
            throw mismatch(call)
        }
    }
}

/// The paged exports in progress, daemon-wide: at most `maxExports`, each holding an LMDB
/// snapshot and a reader slot until its last page, `import-idle-timeout` without a page, or
/// `closeAll`. Thread-safe (one lock, held for table updates only, never while reading).
final class ExportSessions: @unchecked Sendable {  // every OpenExport is reached through `table`'s lock; `busy` keeps one call on it at a time
    /// A paged export in progress: its snapshot cursor, who started it, the page expected next.
    final class OpenExport {
        let owner: Principal
        let cursor: ExportCursor
        var page = 0
        var lastUsed = NIODeadline.now()
        var busy = false
        init(owner: Principal, cursor: ExportCursor) {
            self.owner = owner
            self.cursor = cursor
        }
    }

    private let table = NIOLockedValueBox<[ID: OpenExport]>([:])
    /// Open paged exports (each holds an LMDB snapshot and a reader slot), one per caller.
    static let maxExports = 8

    /// Closes every export idle past `idle` (no page being read), releasing its LMDB snapshot
    /// even when no new export arrives to notice it (`Dispatcher.sweepSessions`).
    func sweep(idle: TimeAmount) {
        let now = NIODeadline.now()
        let expired = table.withLockedValue { table -> [OpenExport] in
            var out: [OpenExport] = []
            for (k, v) in table where !v.busy && now - v.lastUsed > idle {
                out.append(v)
                table.removeValue(forKey: k)
            }
            return out
        }
        for e in expired { e.cursor.close() }
    }

    /// Closes every open export (daemon shutdown).
    func closeAll() {
        let open = table.withLockedValue { table -> [OpenExport] in
            defer { table.removeAll() }
            return Array(table.values)
        }
        for e in open { e.cursor.close() }
    }

    /// One page of a paged export. The first page (empty token) opens a snapshot; each answer
    /// names the next page (`<session>.<n>`), empty after the last. An idle export is closed
    /// after `importIdleTimeoutSeconds`; a caller's new export replaces its previous one.
    /// INVALID_ARGUMENT for a token this daemon did not issue; FAILED_PRECONDITION for an
    /// unknown or out-of-order one; RESOURCE_EXHAUSTED when `maxExports` are open.
    func page(tenant: ID?, includeSecrets: Bool, pageSize: Int, token: String, principal: Principal, on d: Dispatcher) throws -> Reply {
        let idle = TimeAmount.seconds(Int64(d.config.importIdleTimeoutSeconds))
        var expired: [OpenExport] = []
        defer { for e in expired { e.cursor.close() } }
        let (session, entry): (ID, OpenExport)
        if token.isEmpty {
            let cursor = try d.engine.openExport(tenant: tenant, includeSecrets: includeSecrets)
            let id = ID.random()
            let e = OpenExport(owner: principal, cursor: cursor)
            e.busy = true
            do {
                try table.withLockedValue { table in
                    let now = NIODeadline.now()
                    for (k, v) in table where !v.busy && now - v.lastUsed > idle { expired.append(v); table.removeValue(forKey: k) }
                    for (k, v) in table where v.owner == principal && !v.busy { expired.append(v); table.removeValue(forKey: k) }  // a caller's new export replaces its old one
                    guard table.count < ExportSessions.maxExports else {
                        throw AuthzError(.resourceExhausted, "\(ExportSessions.maxExports) paged exports are open; retry when one finishes", field: "export.page_token")
                    }
                    table[id] = e
                }
            } catch {
                cursor.close()
                throw error
            }
            (session, entry) = (id, e)
        } else {
            let parts = token.split(separator: ".")
            guard parts.count == 2, let id = ID(String(parts[0])), let n = Int(parts[1]) else {
                throw AuthzError.invalid("export.page_token", "is not a token this daemon issued")
            }
            let e = try table.withLockedValue { table -> OpenExport in
                guard let e = table[id], e.owner == principal else {
                    throw AuthzError(.failedPrecondition, "export.page_token names no open export (finished, idle past its timeout, or the daemon restarted): start the export again", field: "export.page_token")
                }
                guard !e.busy, e.page == n else {
                    throw AuthzError(.failedPrecondition, "export.page_token is not the next page of its export (ask for pages one at a time, in order)", field: "export.page_token")
                }
                e.busy = true
                return e
            }
            (session, entry) = (id, e)
        }
        do {
            let bytes = try d.engine.nextPage(entry.cursor, records: pageSize)
            let done = entry.cursor.done
            table.withLockedValue { table in
                entry.busy = false
                entry.page += 1
                entry.lastUsed = .now()
                if done { table.removeValue(forKey: session) }
            }
            return .exportPage(bytes, revision: entry.cursor.revision, nextPageToken: done ? "" : "\(session).\(entry.page)")
        } catch {
            table.withLockedValue { _ = $0.removeValue(forKey: session) }
            entry.cursor.close()
            throw error
        }
    }
}
