// `authzd-crash-writer`: the writer that CrashTests SIGKILLs. A test helper, not shipped:
// it was the hidden `authzd debug-crash-writer` subcommand.
//
// Usage: authzd-crash-writer --data-dir DIR --tenant UUID
// Writes one user per transaction forever, printing each acknowledged revision and user id
// on stdout (one unbuffered write each), so every printed line is a write `Engine.write` returned for.
import AuthzEngine
import AuthzModel
import Foundation

var options: [String: String] = [:]
var args = CommandLine.arguments.dropFirst()
while let flag = args.popFirst() {
    guard flag.hasPrefix("--"), let value = args.popFirst() else {
        FileHandle.standardError.write(Data("usage: authzd-crash-writer --data-dir DIR --tenant UUID\n".utf8))
        exit(2)
    }
    options[String(flag.dropFirst(2))] = value
}
guard let dataDir = options["data-dir"], let tenant = options["tenant"].flatMap(ID.init) else {
    FileHandle.standardError.write(Data("usage: authzd-crash-writer --data-dir DIR --tenant UUID\n".utf8))
    exit(2)
}
do {
    let engine = try Engine(directory: dataDir)
    if engine.snapshot.tenant(tenant) == nil {
        try engine.write([.upsert(.tenant(Tenant(id: tenant, name: "crash")))])
    }
    while true {
        let u = ID.random()
        let rev = try engine.write([.upsert(.user(User(id: u, tenantId: tenant)))])
        FileHandle.standardOutput.write(Data("\(rev) \(u)\n".utf8))
    }
} catch {
    FileHandle.standardError.write(Data("error: \(error)\n".utf8))
    exit(1)
}
