import ArgumentParser
import Foundation
import GridClient
import GridFilesystem
import GridFormat
import GridNode
import GridSystem

struct Backup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "backup",
        abstract: "Back up a local directory as a new, versioned snapshot on the grid (Tahoe's backup).",
        discussion: """
            Each run adds TO/Archives/<UTC time> (a tree of immutable directories) and points \
            TO/Latest at it. Files already uploaded and unchanged (same size, mtime and ctime, \
            per NODEDIR/private/backupdb.sqlite, Tahoe's database: a Tahoe user's file works \
            as it is) are not uploaded again, and neither are unchanged directories, so a rerun \
            of an unchanged tree uploads nothing and later snapshots share everything that did \
            not change.

            Beyond Tahoe: only one backup runs at a time per node (a lock); a backup killed \
            half way resumes where it stopped (every upload is recorded when done); a file \
            whose timestamps changed but whose bytes did not (chmod, touch) is recognized by \
            its hash and not uploaded, while its new metadata (mode, times) is recorded; \
            symlinks are recorded (Tahoe skips them) and `grid restore` makes them again.

            Example (cron): grid backup --exclude-vcs ~/work home:backups/work

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "The local directory to back up.") var from: String
    @Argument(help: "Where on the grid (ALIAS:path).") var to: String
    @Option(name: .customLong("exclude"), help: "Skip names matching this glob (repeatable).") var excludes: [String] = []
    @Option(name: .customLong("exclude-from-utf-8"), help: "Skip names matching the globs in FILE, one per line.") var excludeFrom: String?
    @Flag(name: .customLong("exclude-vcs"), help: "Skip version control files (.git, .svn, .hg, CVS, ...).") var excludeVCS = false
    @Flag(name: .customLong("ignore-timestamps"), help: "Do not trust timestamps: hash every file to decide whether it changed.") var ignoreTimestamps = false
    @Flag(name: .shortAndLong, help: "Print nothing on success.") var quiet = false
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON report.") var json = false

    func run() throws {
        try reportingErrors {
            var o = GridFilesystem.BackupOptions()
            o.excludes = excludes.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            if let excludeFrom {
                guard let bytes = try FileSystem.readFile(excludeFrom, maxSize: 1 << 20) else { throw GridError(.notFound, "no exclude file \(excludeFrom)") }
                o.excludes += String(decoding: bytes, as: UTF8.self).split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            if excludeVCS { o.excludes += GridFilesystem.BackupOptions.vcsPatterns }
            o.ignoreTimestamps = ignoreTimestamps
            let target = try GridPath(parsing: to)
            let (from, opts) = (self.from, o)
            let tty = FileDescriptor.standardError.isTerminal && !json && !quiet
            let r = try withFilesystem(nodeDir) { fs in
                try await fs.backup(from: from, to: target, options: opts) { p in
                    if tty {
                        FileHandleStderr.write("\r\u{1B}[K\(p.filesUploaded) files uploaded (\(p.filesReused) reused), \(p.directoriesCreated + p.directoriesReused) directories, \(humanBytes(p.bytesUploaded))")
                    }
                }
            }
            if tty { FileHandleStderr.write("\r\u{1B}[K") }
            for s in r.skipped { FileHandleStderr.write("WARNING: cannot back up special file \(s)\n") }
            if json { try printJSON(r, pretty: true); return }
            if quiet { return }
            FileHandleStdout.write(" \(r.filesUploaded) files uploaded (\(r.filesReused) reused), \(r.filesSkipped) files skipped, "
                + "\(r.directoriesCreated) directories created (\(r.directoriesReused) reused), \(r.directoriesSkipped) directories skipped\n"
                + (r.filesUnchangedByHash > 0 ? " \(r.filesUnchangedByHash) files with new timestamps but the same bytes (not uploaded)\n" : "")
                + (r.symlinks > 0 ? " \(r.symlinks) symlinks recorded\n" : "")
                + " backup done, elapsed time: \(elapsed(r.seconds))\n archive: \(r.archive)\n")
        }
    }

    func elapsed(_ s: Double) -> String {
        let t = Int(s)
        return String(format: "%d:%02d:%02d", t / 3600, t / 60 % 60, t % 60)
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Restore a backup snapshot into a new local directory (files, directories, symlinks, modes and mtimes).",
        discussion: """
            Example: grid restore home:backups/work/Latest ~/work-restored

            The target must not exist or be empty. Files are written under temporary names and \
            renamed when complete and verified.

            \(pathHelp)

            \(nodeDirHelp)

            \(ExitStatus.help)
            """)
    @Argument(help: "The snapshot (ALIAS:TO/Archives/TIME or ALIAS:TO/Latest).") var from: String
    @Argument(help: "The local directory to make.") var to: String
    @Option(name: .customLong("node-dir"), help: "The client node directory.") var nodeDir: String?
    @Flag(help: "Print a JSON report.") var json = false

    func run() throws {
        try reportingErrors {
            let p = try GridPath(parsing: from)
            let to = self.to
            let tty = FileDescriptor.standardError.isTerminal && !json
            let r = try withFilesystem(nodeDir) { fs in
                guard case let .directory(d) = try await fs.resolve(p).capability else { throw GridError(.usage, "\(p.text) is a file; give a snapshot directory") }
                return try await fs.restore(d, to: to) { r in
                    if tty { FileHandleStderr.write("\r\u{1B}[K\(r.files) files, \(r.directories) directories, \(humanBytes(r.bytes))") }
                }
            }
            if tty { FileHandleStderr.write("\r\u{1B}[K") }
            if json { try printJSON(r, pretty: true) } else {
                FileHandleStdout.write("restored \(r.files) files (\(humanBytes(r.bytes))), \(r.directories) directories, \(r.symlinks) symlinks into \(to)\n")
            }
        }
    }
}
