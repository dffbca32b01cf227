/// Size bounds on record fields. Every bound is checked by `Entity.validate()`.
public enum FieldLimits {
    public static let maxMetadataBytes = 16 * 1024
    public static let maxNameBytes = 128
    public static let maxTextBytes = 1024
    public static let maxTokenBytes = 8 * 1024
    public static let maxListItems = 256
    public static let maxJSONDepth = 32
}
